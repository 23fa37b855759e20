"""The Great Expectations adapter: a suite over the image table, row- and data-set-level results.

Row-level expectations mark single images for quarantine (with the reason); data-set-level ones
stop the run. Each expectation carries the quarantine reason in its ``meta``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from genloop.config import CleanConfig

ROW_ID = "id"


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    row_reasons: dict[int, list[str]]  # image id -> reasons it failed
    dataset_failures: list[str]
    expectations: list[dict[str, Any]] = field(default_factory=list)


def _suite(config: CleanConfig, expected_shape: tuple[int, int]):
    import great_expectations.expectations as gxe

    def row(exp, reason: str):
        exp.meta = {"level": "row", "reason": reason}
        return exp

    def table(exp, what: str):
        exp.meta = {"level": "dataset", "reason": what}
        return exp

    h, w = expected_shape
    return [
        table(gxe.ExpectTableRowCountToBeBetween(min_value=config.min_rows, max_value=config.max_rows),
              f"row count outside [{config.min_rows}, {config.max_rows}] (clean.min_rows/max_rows)"),
        *[table(gxe.ExpectColumnToExist(column=c), f"column {c!r} missing")
          for c in ("id", "label", "content_hash", "height", "width", "pixel_min", "pixel_max", "pixel_std")],
        row(gxe.ExpectColumnValuesToNotBeNull(column="pixel_mean"), "nan_or_inf_pixels"),
        row(gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[h]), "wrong_shape"),
        row(gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[w]), "wrong_shape"),
        row(gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(config.labels)), "label_out_of_set"),
        row(gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=config.pixel_min), "pixel_out_of_range"),
        row(gxe.ExpectColumnValuesToBeBetween(column="pixel_max", max_value=config.pixel_max), "pixel_out_of_range"),
        row(gxe.ExpectColumnValuesToBeBetween(column="pixel_std", min_value=config.min_pixel_std), "blank_image"),
        row(gxe.ExpectColumnValuesToBeInSet(column="is_duplicate", value_set=[False]), "duplicate_content"),
    ]


def validate_table(table: pd.DataFrame, config: CleanConfig, expected_shape: tuple[int, int]) -> ValidationOutcome:
    """Run the suite on ``table`` (one row per image, see ``clean.image_table``)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("genloop")
        .add_dataframe_asset("images")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="genloop_images"))
    for expectation in _suite(config, expected_shape):
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="genloop_images", data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": table},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [ROW_ID]},
    )

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


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    try:
        return value.item()
    except AttributeError:
        return str(value)
