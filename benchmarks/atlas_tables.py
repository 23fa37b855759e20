"""Markdown tables from latent atlases that evaluate or ``genloop explain`` wrote (run on demand).

Reads each ``NAME=REPORTS[:MODEL]`` (a project's ``reports/`` folder holding ``explain.json`` and
``explain_detail.json``, or a ``genloop explain`` page's stem such as ``reports/explain-genloop-vae-v2``;
MODEL ``vae`` or ``gan``, default both) and prints:

1. one score table: MIG, DCI, active units, probe accuracy per atlas;
2. which latent dimension (VAE) or GANSpace direction (GAN) carries each morphometric, with its MIG and
   the R² of the factor's best linear direction;
3. the morphometric gap table: generated against real, per measure and class (relative difference of
   the means; slant in degrees), one cell per atlas.

    python benchmarks/atlas_tables.py shipped=PROJECT/reports:vae beta4=OTHER/reports:vae gan=PROJECT/reports:gan
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

SCORES = ("active_units", "latent_dim", "kl_total_nats", "mig", "mig_morphometrics", "dci_disentanglement",
          "dci_completeness", "dci_informativeness", "probe_accuracy")
FACTORS = ("slant", "thickness", "width", "height", "area", "length", "label")
MEASURES = ("area", "length", "thickness", "slant", "width", "height")


def read_atlas(spec: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(name, model, scores, detail) of ``NAME=PATH[:MODEL]``."""
    name, _, rest = spec.partition("=")
    path, _, model = rest.partition(":")
    base = Path(path)
    scores_file, detail_file = ((base / "explain.json", base / "explain_detail.json") if base.is_dir()
                                else (base.with_suffix(".json"), base.with_name(base.name + "_detail.json")))
    scores, detail = json.loads(scores_file.read_text()), json.loads(detail_file.read_text())
    return name, model or "vae", scores[model or "vae"], detail[model or "vae"]


def cell(value: Any, fmt: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


def score_table(atlases: list[tuple[str, str, dict, dict]]) -> list[str]:
    lines = ["| atlas | model | " + " | ".join(SCORES) + " |", "| --- | --- |" + " ---: |" * len(SCORES)]
    for name, model, scores, _ in atlases:
        lines.append(f"| {name} | {model} | " + " | ".join(
            cell(scores.get(k), ".0f" if k in ("active_units", "latent_dim") else ".3f") for k in SCORES) + " |")
    return lines


def carrier_table(atlases: list[tuple[str, str, dict, dict]]) -> list[str]:
    lines = ["| factor | " + " | ".join(f"{name}: axis (MIG, R²)" for name, *_ in atlases) + " |",
             "| --- |" + " --- |" * len(atlases)]
    for factor in FACTORS:
        cells = []
        for _, model, _, detail in atlases:
            c = detail.get("carriers", {}).get(factor)
            prefix = "z" if model == "vae" else "d"
            cells.append("-" if c is None else
                         f"{prefix}{c['axis']} ({c['mig']:.3f}, {cell(c.get('direction_r2'), '.2f')})")
        lines.append(f"| {factor} | " + " | ".join(cells) + " |")
    return lines


def gap_value(gap: dict[str, Any]) -> str:
    if gap["measure"] == "slant":
        return f"{math.degrees(gap['mean_generated'] - gap['mean_real']):+.1f}°"
    rel = gap["relative_difference"]
    return f"{rel:+.0%}" if math.isfinite(rel) else "-"


def gap_table(atlases: list[tuple[str, str, dict, dict]]) -> list[str]:
    by = [{(g["measure"], g["label"]): g for g in detail.get("gaps", [])} for *_, detail in atlases]
    labels = sorted({label for found in by for (_, label) in found if label is not None})
    names = " / ".join(name for name, *_ in atlases)
    lines = [f"Generated vs real, mean per measure ({names}; slant: degrees further right):", "",
             "| class | " + " | ".join(MEASURES) + " |", "| --- |" + " ---: |" * len(MEASURES)]
    for label in [None, *labels]:
        cells = [" / ".join(gap_value(found[(m, label)]) if (m, label) in found else "-" for found in by)
                 for m in MEASURES]
        lines.append(f"| {'all' if label is None else label} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("atlas", nargs="+", help="NAME=REPORTS_FOLDER_OR_PAGE_STEM[:vae|gan]")
    parser.add_argument("--gaps", nargs="*", help="names of the atlases in the gap table (default: all)")
    args = parser.parse_args()
    atlases = [read_atlas(spec) for spec in args.atlas]
    chosen = [a for a in atlases if not args.gaps or a[0] in args.gaps]
    print("\n".join([*score_table(atlases), "", *carrier_table(atlases), "", *gap_table(chosen)]))


if __name__ == "__main__":
    main()
