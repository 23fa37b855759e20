"""The Great Expectations adapter: a suite over the image table, row- and data-set-level results.

Row-level expectations mark single images for quarantine (with the reason); data-set-level ones
stop the run. Each expectation carries the quarantine reason in its ``meta``. The suite runs
through a Checkpoint so the same run can also render GE's Data Docs (static HTML) into a folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import html
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from genloop.config import CleanConfig
from genloop.errors import GenloopError

ROW_ID = "id"
DOCS_SITE = "genloop"
DATA_ASSET = "data/images.npy + manifest.csv"
# GE's status icons are Font Awesome glyphs from a CDN: offline the status column is blank, so the
# pages get text marks instead (colour plus a word, readable without any font or script).
_ICON = re.compile(r'<i class="fas fa-(check-circle text-success|times text-danger)"\s*(aria-hidden="true")?\s*></i>')
_MARKS = {"check-circle text-success": ("passed", "#1a7f37", "&#10004;"),
          "times text-danger": ("failed", "#cf222e", "&#10008;")}


@contextlib.contextmanager
def quiet_great_expectations() -> Iterator[None]:
    """Hide GE's INFO records ("Created temporary directory ... for ephemeral docs site", registry and
    datasource chatter) while GE is imported and runs; its warnings still show."""
    def loggers() -> list[logging.Logger]:
        return [logging.getLogger("great_expectations"),
                *(logger for name, logger in logging.Logger.manager.loggerDict.items()
                  if name.startswith("great_expectations.") and isinstance(logger, logging.Logger))]

    saved: dict[logging.Logger, int] = {}

    def hush() -> None:
        for logger in loggers():
            saved.setdefault(logger, logger.level)
            if logger.level < logging.WARNING:  # NOTSET too: the parent's WARNING then applies
                logger.setLevel(logging.WARNING)

    hush()
    try:
        import great_expectations  # noqa: F401  (some of its loggers set their own level on import)

        hush()
        yield
    finally:
        for logger, level in saved.items():
            logger.setLevel(level)


def run_name_for(table: pd.DataFrame) -> str:
    """``genloop-clean-<digest>``: names the Data Docs run after the images' content, so two
    validations of the same data share a name and a changed data set shows a new one."""
    hashes = table["content_hash"].astype(str) if "content_hash" in table.columns else table.index.astype(str)
    return "genloop-clean-" + hashlib.sha256("\n".join(hashes).encode()).hexdigest()[:10]


class DataValidationError(GenloopError, RuntimeError):
    """The data set as a whole is unusable; the message names the report to read."""


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    row_reasons: dict[int, list[str]]  # image id -> reasons it failed
    dataset_failures: list[str]
    expectations: list[dict[str, Any]] = field(default_factory=list)


def row_count_reason(config: CleanConfig, rows: int) -> str:
    """What to change when the data set's size is outside [clean.min_rows, clean.max_rows], with the value."""
    if rows < config.min_rows:
        return (f"{rows} rows, fewer than clean.min_rows={config.min_rows}: collect more images, or accept "
                f"this many with -S clean.min_rows={max(rows, 1)}")
    if rows > config.max_rows:
        return (f"{rows} rows, more than clean.max_rows={config.max_rows}: accept them with "
                f"-S clean.max_rows={rows}")
    return f"row count outside [{config.min_rows}, {config.max_rows}] (clean.min_rows/max_rows)"


def expected_layout(expected_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) from (H, W) (grey) or (C, H, W)."""
    return (1, *expected_shape) if len(expected_shape) == 2 else tuple(expected_shape)  # type: ignore[return-value]


def _suite(config: CleanConfig, expected_shape: tuple[int, ...], rows: int = 0):
    import great_expectations.expectations as gxe

    def row(exp, reason: str):
        exp.meta = {"level": "row", "reason": reason}
        return exp

    def table(exp, what: str):
        exp.meta = {"level": "dataset", "reason": what}
        return exp

    c, h, w = expected_layout(expected_shape)
    return [
        table(gxe.ExpectTableRowCountToBeBetween(min_value=config.min_rows, max_value=config.max_rows),
              row_count_reason(config, rows)),
        *[table(gxe.ExpectColumnToExist(column=col), f"column {col!r} missing")
          for col in ("id", "label", "content_hash", "channels", "height", "width", "pixel_min", "pixel_max",
                      "pixel_std")],
        row(gxe.ExpectColumnValuesToNotBeNull(column="pixel_mean"), "nan_or_inf_pixels"),
        row(gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[c]), "wrong_shape"),
        row(gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[h]), "wrong_shape"),
        row(gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[w]), "wrong_shape"),
        row(gxe.ExpectColumnValuesToBeBetween(column="label", min_value=0) if config.labels == "all"
            else gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(config.labels)), "label_out_of_set"),
        row(gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=config.pixel_min), "pixel_out_of_range"),
        row(gxe.ExpectColumnValuesToBeBetween(column="pixel_max", max_value=config.pixel_max), "pixel_out_of_range"),
        row(gxe.ExpectColumnValuesToBeBetween(column="pixel_std", min_value=config.min_pixel_std), "blank_image"),
        row(gxe.ExpectColumnValuesToBeInSet(column="is_duplicate", value_set=[False]), "duplicate_content"),
    ]


def validate_table(table: pd.DataFrame, config: CleanConfig, expected_shape: tuple[int, ...],
                   docs_dir: Path | None = None, run_name: str | None = None,
                   data_asset: str = DATA_ASSET) -> ValidationOutcome:
    """Run the suite on ``table`` (one row per image, see ``clean.image_table``, with a ``channels``
    column); ``expected_shape`` is (C, H, W), or (H, W) for grey.

    With ``docs_dir``, GE's Data Docs for this run are built there (``index.html`` at the top), the
    run named ``run_name`` (default ``run_name_for(table)``) and the asset ``data_asset``.
    """
    with quiet_great_expectations():
        return _validate_table(table, config, expected_shape, docs_dir, run_name or run_name_for(table), data_asset)


def _validate_table(table: pd.DataFrame, config: CleanConfig, expected_shape: tuple[int, ...],
                    docs_dir: Path | None, run_name: str, data_asset: str) -> ValidationOutcome:
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        context.add_data_docs_site(site_name=DOCS_SITE, site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(Path(docs_dir).resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    batch = (
        context.data_sources.add_pandas("genloop")
        .add_dataframe_asset("images")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="genloop_images"))
    for expectation in _suite(config, expected_shape, len(table)):
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="genloop_images", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="genloop_clean", validation_definitions=[definition],
        actions=[UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])] if docs_dir is not None else [],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [ROW_ID]},
    ))
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(timezone.utc))
    (result,) = checkpoint.run(batch_parameters={"dataframe": table}, run_id=run_id).run_results.values()
    if docs_dir is not None:
        context.build_data_docs(site_names=[DOCS_SITE])
        statuses = mark_status_offline(Path(docs_dir), data_asset)
        link_pages_offline(Path(docs_dir), statuses)

    return outcome_of(result)


def outcome_of(result) -> ValidationOutcome:
    """Row-level failures as quarantine reasons per image id; data-set-level ones as failures to stop on."""
    row_reasons: dict[int, list[str]] = {}
    dataset_failures: list[str] = []
    summary: list[dict[str, Any]] = []
    for res in result.results:
        cfg = res.expectation_config
        meta = cfg.meta or {}
        unexpected = res.result.get("unexpected_index_list") or []
        summary.append({
            "expectation": cfg.type,
            "column": cfg.kwargs.get("column"),
            "level": meta.get("level"),
            "success": bool(res.success),
            "unexpected_count": int(res.result.get("unexpected_count") or 0),
            "observed_value": _plain(res.result.get("observed_value")),
        })
        if res.success:
            continue
        if meta.get("level") == "row":
            for entry in unexpected:
                reasons = row_reasons.setdefault(int(entry[ROW_ID]), [])
                if meta["reason"] not in reasons:
                    reasons.append(meta["reason"])
        else:
            dataset_failures.append(str(meta.get("reason", cfg.type)))
    return ValidationOutcome(
        success=bool(result.success), row_reasons=row_reasons,
        dataset_failures=dataset_failures, expectations=summary,
    )


def _mark(match: re.Match[str]) -> str:
    word, colour, glyph = _MARKS[match.group(1)]
    if match.group(2):  # the page header's overall status
        return (f'<span class="genloop-status" data-status="{word}" style="color:#fff;background:{colour};'
                f'padding:0 .4em;border-radius:3px;font-weight:bold">{glyph} {word.upper()}</span>')
    return f'<span class="genloop-status" data-status="{word}" style="color:{colour};font-weight:bold">{glyph} {word}</span>'


def mark_status_offline(docs_dir: Path, data_asset: str) -> dict[str, bool]:
    """Replace the CDN status icons of every validation page with coloured text marks and fill in the
    data asset GE leaves as ``None`` for in-memory data; returns each page's overall success."""
    statuses: dict[str, bool] = {}
    for page in sorted((docs_dir / "validations").rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        header = _ICON.search(text.split("Status:", 1)[1]) if "Status:" in text else None
        text = _ICON.sub(_mark, text)
        text = text.replace("Data asset: None<br>", f"Data asset: {html.escape(data_asset)}<br>")
        page.write_text(text, encoding="utf-8")
        if header is not None:
            statuses[page.relative_to(docs_dir).as_posix()] = header.group(1).startswith("check")
    return statuses


def link_pages_offline(docs_dir: Path, statuses: dict[str, bool] | None = None) -> None:
    """Put plain links to the site's pages at the top of ``index.html``, each validation with its status.

    GE's index lists its pages in tables that scripts from a CDN fill in; offline (the usual case
    here) the index shows no links. The pages themselves render readably without those scripts.
    """
    index = docs_dir / "index.html"
    statuses = statuses or {}
    pages = sorted(p.relative_to(docs_dir).as_posix()
                   for folder in ("validations", "expectations") for p in (docs_dir / folder).rglob("*.html"))

    def status(page: str) -> str:
        if page not in statuses:
            return ""
        word, colour, glyph = _MARKS["check-circle text-success" if statuses[page] else "times text-danger"]
        return f' <span class="genloop-status" data-status="{word}" style="color:{colour};font-weight:bold">{glyph} {word}</span>'

    items = "".join(f'<li><a href="{html.escape(p)}">{html.escape(p)}</a>{status(p)}</li>' for p in pages)
    block = (f'<section id="genloop-pages" style="margin:1em;font-family:sans-serif">'
             f"<h2>genloop data validation</h2><ul>{items}</ul></section>")
    text = index.read_text(encoding="utf-8")
    body = re.search(r"<body[^>]*>", text)
    at = body.end() if body else 0
    index.write_text(text[:at] + block + text[at:], encoding="utf-8")


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    try:
        return value.item()
    except AttributeError:
        return str(value)
