"""What a person reads at the end of a run: the metrics side by side and where everything went."""
from __future__ import annotations

import json
from typing import Any

from genloop.config import MODELS
from genloop.paths import ProjectPaths

SHOWN = ("recognisable_share", "fid", "fid_alt", "kid_mean", "is_mean", "precision", "recall", "density",
         "coverage", "class_tvd", "nn_train_distance_ratio",
         # shown for the models that have them: conditional, audited, privately trained
         "label_fidelity", "tstr_accuracy", "tstr_real_accuracy", "mia_distance_auc", "mia_elbo_auc", "epsilon",
         "evaluation_trusted")  # 1 or 0 (genloop.core.trust); the reasons follow the table


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    models = [m for m in MODELS if m in metrics]
    floor = next(iter(metrics.values()), {})
    header = f"{'metric':<24}" + "".join(f"{m:>12}" for m in models) + f"{'real floor':>12}"
    rows = [header, "-" * len(header)]
    for name in (n for n in SHOWN if any(n in metrics[m] for m in models)):
        row = f"{name:<24}" + "".join(f"{metrics[m][name]:>12.4g}" if name in metrics[m] else f"{'-':>12}"
                                      for m in models)
        floor_value = floor.get(name + "_real_floor")
        rows.append(row + (f"{floor_value:>12.4g}" if floor_value is not None else f"{'-':>12}"))
    return "\n".join(rows)


def evaluation_warnings(paths: ProjectPaths) -> list[str]:
    """Why the figures above cannot be trusted (the ``trust`` block evaluate wrote to
    reports/metrics_detail.json), as warning lines; none when they can be, or evaluate has not run."""
    detail = paths.reports / "metrics_detail.json"
    try:
        doubts = json.loads(detail.read_text()).get("trust") or {}
    except (OSError, ValueError):
        return []
    models = [m for m in MODELS if doubts.get(m)]
    reasons = list(dict.fromkeys(r for m in models for r in doubts[m]))
    if not reasons:
        return []
    names = " and ".join(m.upper() for m in models)
    return [f"WARNING: this evaluation of the {names} cannot be trusted:", *(f"  - {r}" for r in reasons)]


def mlflow_ui_command(paths: ProjectPaths) -> str:
    db = paths.mlflow_dir / "mlflow.db"
    rel = db.relative_to(paths.root)
    return f"cd {paths.root} && .venv/bin/mlflow ui --backend-store-uri sqlite:///{rel} --host 127.0.0.1 --port 5000"


def where_tracked(result: dict[str, Any], paths: ProjectPaths, tracking_uri: str | None) -> list[str]:
    """The lines saying where the runs went: a tracking server's UI, or the local store and how to open it."""
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return [f"MLflow tracking server: {tracking_uri} (parent run {result['parent_run_id']})",
                f"compare the runs: open {tracking_uri}"]
    return [f"MLflow store: {paths.mlflow_dir} (parent run {result['parent_run_id']})",
            "compare the runs:", f"  {mlflow_ui_command(paths)}"]


def run_summary(result: dict[str, Any], paths: ProjectPaths, tracking_uri: str | None = None) -> str:
    lines = [
        "",
        f"genloop pipeline finished in {result['seconds']:.1f} s "
        f"({result['rows']} images {result['image_shape']}, quarantined {result['quarantined']}, dvc md5 {result['dvc_hash']}"
        + (f", pulled from DVC remote {result['pulled_from']!r}" if result.get("pulled_from") else "") + ")",
        "",
        metrics_table(result["metrics"]),
        f"(classifier accuracy on held-out real images: {result['classifier_accuracy']:.3f})",
        *evaluation_warnings(paths),
        "",
        "ONNX models:",
        *(f"  {kind}: {info['path']}  (max |ort - torch| {info['max_abs_diff']:.1e}"
          + (f"; {info['registered']})" if info.get("registered") else ")")
          for kind, info in result["onnx"].items()),
        *(f"  {kind}: {info['promotion']}" + (" (export skipped: the earlier run's decision)"
                                              if "export" in (result.get("cached_stages") or []) else "")
          for kind, info in result["onnx"].items() if info.get("promotion")),
        *([f"stages skipped (inputs unchanged; --force runs them again): {', '.join(result['cached_stages'])}"] if result.get("cached_stages") else []),
        f"metrics: {paths.metrics}",
        f"report: {paths.root / 'reports' / 'index.html'}",
        *where_tracked(result, paths, tracking_uri),
        "",
    ]
    return "\n".join(lines)
