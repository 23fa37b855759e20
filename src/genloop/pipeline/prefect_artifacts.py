"""What a Prefect flow run shows besides its task graph: the headline metrics, each model's promotion
decision and links to the report and the MLflow runs (Artifacts tab), and genloop's own log records
(per-epoch training progress) in the run's logs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from genloop.config import MODELS
from genloop.core import headline

GENLOOP_LOGGER = "genloop"
log = logging.getLogger(__name__)
MLFLOW_UI = "http://127.0.0.1:5000"  # where `make ui` serves the store


def route_genloop_logs() -> None:
    """Send ``genloop.*`` log records to the Prefect run logs (what PREFECT_LOGGING_EXTRA_LOGGERS
    does, but also when Prefect configured its logging before that variable was set)."""
    prefect_extra = logging.getLogger("prefect.extra")
    logger = logging.getLogger(GENLOOP_LOGGER)
    for handler in list(logger.handlers):  # the CLI's plain stderr handler: Prefect's console shows them now
        if handler.get_name() == "genloop-cli":
            logger.removeHandler(handler)
    for handler in prefect_extra.handlers:
        if handler not in logger.handlers:
            logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


class _NoUserErrorTracebacks(logging.Filter):
    """Drops a record carrying a user error (bad data, bad config: a GenloopError) from the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        from genloop.errors import is_user_error

        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not is_user_error(exc)


def quiet_user_error_tracebacks() -> None:
    """Keep Prefect's console from printing a traceback per task and per flow for a user error, which the
    CLI then prints once as its ``error:`` line. Only the console handlers: the run's logs in the Prefect
    UI keep the traceback, and the task and flow runs are still marked Failed (their state lines stay)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    for handler in {h for logger in loggers for h in getattr(logger, "handlers", [])}:
        if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _NoUserErrorTracebacks) for f in handler.filters):
            handler.addFilter(_NoUserErrorTracebacks())


def metrics_table(figures: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per metric: VAE, GAN and the real-data floor (None where a value is missing)."""
    metrics = list(dict.fromkeys(m for name in (*MODELS, headline.FLOOR) for m in figures.get(name, {})))

    def cell(name: str, metric: str) -> float | None:
        value = figures.get(name, {}).get(metric)
        return None if value is None else float(f"{value:.4g}")

    return [{"metric": m, "vae": cell("vae", m), "gan": cell("gan", m), "real floor": cell(headline.FLOOR, m)}
            for m in metrics]


def promotion_markdown(onnx: dict[str, dict[str, Any]]) -> str:
    """A line per model: its registered version and why it was or was not promoted."""
    lines = ["# Promotion", ""]
    for kind, model in onnx.items():
        registered = model.get("registered") or "not registered"
        decision = model.get("promotion") or "no promotion decision (registry off, or gate disabled)"
        lines.append(f"- **{kind.upper()}** ({registered}): {decision}")
    return "\n".join(lines) + "\n"


def mlflow_run_url(experiment_id: str, run_id: str, base: str = MLFLOW_UI) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def publish(summary: dict[str, Any], metrics_file: Path, report_html: Path | None, experiment_id: str | None,
            key_prefix: str = "genloop") -> list[str]:
    """Create the flow run's artifacts from the pipeline summary; returns their keys. Call inside a flow."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    keys = [f"{key_prefix}-metrics", f"{key_prefix}-promotion"]
    rows = metrics_table(headline.read(metrics_file))
    create_table_artifact(rows or [{"metric": "none", "vae": None, "gan": None, "real floor": None}],
                          key=keys[0], description=f"Headline metrics from {metrics_file} (lower FID is better)")
    create_markdown_artifact(promotion_markdown(summary.get("onnx", {})), key=keys[1],
                             description="Champion alias decision per model (export's promotion gate)")
    if report_html is not None and Path(report_html).exists():
        keys.append(f"{key_prefix}-report")
        create_link_artifact(Path(report_html).resolve().as_uri(), link_text="evaluation report (reports/index.html)",
                             key=keys[-1], description="Samples, metrics and figures, readable offline")
        atlas = Path(report_html).with_name("explain.html")  # written beside it while evaluate.explain is on
        if atlas.exists():
            keys.append(f"{key_prefix}-latent-atlas")
            create_link_artifact(atlas.resolve().as_uri(), link_text="latent atlas (reports/explain.html)",
                                 key=keys[-1], description="What each latent dimension or direction does, measured")
    if experiment_id:
        runs = {"pipeline (parent)": summary.get("parent_run_id"),
                **{f"{kind} training": run_id for kind, run_id in summary.get("child_run_ids", {}).items()}}
        for label, run_id in runs.items():
            if not run_id:
                continue
            keys.append(f"{key_prefix}-mlflow-{label.split()[0]}")
            create_link_artifact(mlflow_run_url(experiment_id, run_id), link_text=f"MLflow run: {label}",
                                 key=keys[-1], description="Open with `make ui` running")
    log.info("flow run artifacts: %s", ", ".join(keys))
    return keys
