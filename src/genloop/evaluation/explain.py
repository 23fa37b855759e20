"""Where the latent atlas (``genloop.evaluation.atlas``) shows: ``reports/explain.html`` (offline, PNGs
in ``reports/explain/``), ``reports/explain.json`` (the scores, a DVC metrics file) beside
``reports/explain_detail.json`` (carriers, directions, gaps, what was skipped), and each model's
MLflow training run (metrics ``mig``, ``dci_*``, ``active_units``, ``probe_accuracy`` and the page as
artifacts under ``explain/``).

``explain_trained`` is the evaluate stage's part (the models in outputs/train);
``genloop.evaluation.explain_version`` explains a registered version with the same page.
"""
from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genloop.config import MODEL_TITLES, MODELS, Params, sampling_seed
from genloop.evaluation.atlas import EXPLAIN_METRICS, ModelAtlas, build, from_checkpoint
from genloop.io import atomic, tracking
from genloop.paths import ProjectPaths


@dataclass(frozen=True)
class ExplainReport:
    html: Path
    json: Path
    figures: Path
    atlases: dict[str, ModelAtlas]


def explain_images(params: Params, held_out: int) -> int:
    return max(2, min(params.evaluate.explain_images, held_out))


def explain_trained(params: Params, paths: ProjectPaths, data: Any) -> ExplainReport:
    """The atlas of both trained models (outputs/train/*/model.pt), written as reports/explain.*."""
    n = explain_images(params, len(data.held_out))
    atlases = {kind: build(from_checkpoint(kind, paths.train(kind) / "model.pt"), data, n,
                           sampling_seed(params.seed), params.evaluate.batch_size) for kind in MODELS}
    return write(paths.reports, "explain", atlases, {"models": "outputs/train (this evaluation)"})


def as_json(atlases: dict[str, ModelAtlas]) -> dict[str, Any]:
    """reports/explain.json: per model its scores only (numbers: what ``dvc metrics show`` lists)."""
    return {kind: {**{k: _finite(v) for k, v in a.scores.items()}, "seconds": round(a.seconds, 2)}
            for kind, a in atlases.items()}


def as_detail(atlases: dict[str, ModelAtlas], meta: dict[str, str]) -> dict[str, Any]:
    """reports/explain_detail.json: per model which axis or direction carries each factor, the directions,
    every morphometric gap with its sentence, what was skipped and why."""
    return _strict({**{kind: {"carriers": a.carriers, "directions": a.directions, "gaps": a.gaps,
                              "skipped": a.skipped, "notes": a.notes} for kind, a in atlases.items()}, "meta": meta})


def _strict(obj: Any) -> Any:
    """The same structure with NaN and infinities as null (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return _finite(float(obj))
    return obj


def _finite(value: float) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def write(folder: Path, stem: str, atlases: dict[str, ModelAtlas], meta: dict[str, str]) -> ExplainReport:
    """``folder/stem.html``, ``folder/stem.json`` and the PNGs in ``folder/stem/`` (swapped in whole)."""
    meta = {"written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), **meta}
    figures = folder / stem
    folder.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_dir(figures) as tmp:
        for atlas in atlases.values():
            for name, _, png in atlas.figures:
                (tmp / name).write_bytes(png)
    json_file, html_file = folder / f"{stem}.json", folder / f"{stem}.html"
    atomic.write_text(json_file, json.dumps(as_json(atlases), indent=1, allow_nan=False) + "\n")
    detail = json.dumps(as_detail(atlases, meta), indent=1, default=_jsonable, allow_nan=False)
    atomic.write_text(detail_file(json_file), detail + "\n")
    atomic.write_text(html_file, render(atlases, stem, meta))
    return ExplainReport(html_file, json_file, figures, atlases)


def detail_file(json_file: Path) -> Path:
    """explain.json's companion with everything that is not a score."""
    return json_file.with_name(json_file.stem + "_detail.json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def log(report: ExplainReport, run_ids: dict[str, str]) -> None:
    """Each model's EXPLAIN_METRICS on its run, with the page, its JSON and figures under ``explain/``."""
    for kind, run_id in run_ids.items():
        if kind not in report.atlases:
            continue
        tracking.log_metrics(run_id, report.atlases[kind].metrics())
        tracking.log_files(run_id, [report.html, report.json, detail_file(report.json)], artifact_path="explain")
        tracking.log_folder(run_id, report.figures, artifact_path=f"explain/{report.figures.name}")


# ---- the page ------------------------------------------------------------------------------------
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th:first-child,td.l{text-align:left}p.small,li.small{font-size:.88em;color:#555;max-width:62em}
figure{margin:.6em 0}img{image-rendering:pixelated;max-width:100%}figcaption{font-size:.85em;color:#555}
.skip{color:#8a4b00}
"""

READING = {
    "mig": "mutual-information gap, mean over factors: 1 = each factor lives in one axis alone, 0 = spread or absent",
    "mig_morphometrics": "MIG over the shape measures only (the label left out)",
    "dci_disentanglement": "1 = each axis serves one factor (Eastwood & Williams 2018)",
    "dci_completeness": "1 = each factor is carried by one axis",
    "dci_informativeness": "held-out R² / accuracy of predicting the factors linearly from the axes",
    "active_units": "dimensions whose mean KL exceeds 0.01 nats: the ones the decoder reads",
    "probe_accuracy": "held-out accuracy of a logistic regression reading the class from the axes",
    "attribution_nearest_distance_median": "classifier-feature distance of a sample to its nearest training image",
}


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def _scores_table(atlases: dict[str, ModelAtlas]) -> str:
    kinds = list(atlases)
    names = [k for k in (*EXPLAIN_METRICS, "mig_morphometrics", "attribution_nearest_distance_median")
             if any(k in a.scores for a in atlases.values())]
    rows = "".join(f"<tr><th>{k}</th>" + "".join(f"<td>{_fmt(atlases[m].scores.get(k))}</td>" for m in kinds)
                   + f"<td class=l>{html.escape(READING.get(k, ''))}</td></tr>" for k in names)
    head = "<tr><th>score</th>" + "".join(f"<th>{MODEL_TITLES.get(k, k)}</th>" for k in kinds) + "<th>reading</th></tr>"
    return f"<table>{head}{rows}</table>"


def _carriers_table(atlas: ModelAtlas) -> str:
    if not atlas.carriers:
        return ""
    axis = "dimension" if atlas.kind == "vae" else "direction"
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{'z' if atlas.kind == 'vae' else 'd'}{c['axis']}</td>"
        f"<td>{_fmt(c['mig'])}</td><td>{_fmt(c['mi_nats'])}</td><td>{_fmt(c.get('direction_r2'))}</td>"
        f"<td>{_fmt(c['informativeness'])}</td></tr>" for name, c in atlas.carriers.items())
    return (f"<table><tr><th>factor</th><th>best single {axis}</th><th>its MIG</th><th>MI (nats)</th>"
            f"<th>R² of the best latent direction</th><th>DCI informativeness</th></tr>{rows}</table>")


def _gaps_table(atlas: ModelAtlas, limit: int = 12) -> str:
    overall = [g for g in atlas.gaps if g["label"] is None]
    by_class = [g for g in atlas.gaps if g["label"] is not None][:limit]
    if not overall:
        return "<p class=small>No morphometric gaps (too few images with a foreground).</p>"

    def row(g: dict[str, Any]) -> str:
        label = "all" if g["label"] is None else str(g["label"])
        return (f"<tr><td class=l>{label}</td><td class=l>{g['measure']}</td><td>{_fmt(g['mean_real'])}</td>"
                f"<td>{_fmt(g['mean_generated'])}</td><td>{_fmt(g['wasserstein_sd'])}</td><td>{_fmt(g['ks'])}</td>"
                f"<td class=l>{html.escape(g['sentence'])}</td></tr>")

    head = ("<tr><th>class</th><th>measure</th><th>real mean</th><th>generated mean</th><th>W1 / sd</th>"
            "<th>KS</th><th>in words</th></tr>")
    return (f"<table>{head}{''.join(row(g) for g in overall)}</table>"
            f"<h3>Largest per-class gaps</h3><table>{head}{''.join(row(g) for g in by_class)}</table>")


def _model_section(atlas: ModelAtlas, stem: str) -> str:
    shown = sorted(atlas.figures, key=lambda f: "attribution" in f[0])  # traversals first, attribution last
    figures = "".join(f'<figure><img src="{stem}/{name}" alt="{html.escape(caption)}">'
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>" for name, caption, _ in shown)
    notes = "".join(f"<li class=small>{html.escape(n)}</li>" for n in atlas.notes)
    skipped = "".join(f"<li class='small skip'>skipped: {html.escape(s)}</li>" for s in atlas.skipped)
    return (f"<h2>{MODEL_TITLES.get(atlas.kind, atlas.kind)} ({atlas.seconds:.1f} s)</h2><ul>{notes}{skipped}</ul>"
            f"<h3>Which {'dimension' if atlas.kind == 'vae' else 'direction'} carries which factor</h3>"
            f"{_carriers_table(atlas)}{figures}<h3>Morphometric gaps: real held-out vs generated</h3>"
            f"{_gaps_table(atlas)}")


def render(atlases: dict[str, ModelAtlas], stem: str, meta: dict[str, str]) -> str:
    info = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in meta.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>genloop latent atlas</title><style>{STYLE}</style></head>
<body>
<h1>genloop latent atlas: what the latent space carries</h1>
<ul class=small>{info}</ul>
<p class=small><a href="index.html">Evaluation report</a>. Each image is measured (Morpho-MNIST: area, stroke
length, thickness, slant, width, height, on the binarised image) and the latent codes are scored against
those measures and the class. A <em>traversal grid</em> holds one dimension or direction per row; the columns
move it from -3 to +3 standard deviations of the encoded (VAE) or sampled (GAN) codes with everything else
fixed: a row whose images change in one visible way (leaning, growing thicker) is a dimension that carries that
factor. <em>MIG</em> asks whether one single axis carries a factor; a VAE's axes are only defined up to a
rotation, so a factor can also sit on a <em>direction</em> (a mix of axes): its held-out R² says how much of
the factor a straight line through the latent space explains. The <em>gap table</em> compares the measures of
real held-out images with as many samples (classes: a conditional model's requested labels, else the
classifier's); the attribution rows show where samples come from: each beside its nearest training images.</p>
<h2>Scores</h2>
{_scores_table(atlases)}
{''.join(_model_section(a, stem) for a in atlases.values())}
</body></html>
"""
