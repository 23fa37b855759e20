"""Draws docs/img/loop.svg, the picture of the loop at the top of the docs.

Plain SVG written by hand (no matplotlib, no fonts to embed, nothing fetched), so it renders offline
in a browser, in MkDocs and on a Git host alike. Rerun after changing a stage's files or tools:

    python docs/tools/loop_svg.py
"""
from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 1000, 530
COL_X = [70, 300, 530, 760]  # left edge of each column
BOX_W, BOX_H = 190, 78
ROW_Y = [78, 300]  # top of each row's boxes

TOOLS = {  # tool -> colour of its label
    "Prefect": "#1d4ed8",
    "DVC": "#7c3aed",
    "Great Expectations": "#c2410c",
    "MLflow": "#0369a1",
    "ONNX Runtime": "#047857",
    "PyTorch": "#b91c1c",
    "FastAPI": "#047857",
}

# (row, column, title, command, tools, files it writes)
STAGES = [
    (0, 0, "source", "--source SPEC", ["digits · idx · mnist"], ["folder:PATH · npz:PATH", "(io/sources.py)"]),
    (0, 1, "collect", "genloop collect", ["DVC"], ["data/images.npy", "data/manifest.csv", "data.dvc"]),
    (0, 2, "clean", "genloop clean", ["Great Expectations"],
     ["outputs/clean/{train,val,test}.npz", "reports/validation.json", "reports/data_docs/"]),
    (0, 3, "augment", "genloop augment", ["PyTorch"], ["outputs/augment/train.npz", "outputs/augment/preview.png"]),
    (1, 3, "train", "genloop train", ["PyTorch", "MLflow"],
     ["outputs/train/{vae,gan}/model.pt", "history.csv, samples.png"]),
    (1, 2, "evaluate", "genloop evaluate", ["MLflow"], ["reports/metrics.json", "reports/index.html"]),
    (1, 1, "export", "genloop export", ["ONNX Runtime", "MLflow"],
     ["models/*.onnx, models/triton/", "registry: @champion"]),
    (1, 0, "serve", "genloop serve", ["ONNX Runtime", "FastAPI"], ["/v2/models/NAME/infer", "Open Inference Protocol"]),
]


def text(x: float, y: float, s: str, size: int = 13, weight: str = "normal", fill: str = "#111827",
         anchor: str = "middle", family: str = "sans-serif", extra: str = "") -> str:
    return (f'<text x="{x}" y="{y}" font-family="{family}" font-size="{size}" font-weight="{weight}" '
            f'fill="{fill}" text-anchor="{anchor}"{extra}>{escape(s)}</text>')


def arrow(points: list[tuple[float, float]], colour: str = "#374151", dashed: bool = False) -> str:
    d = " ".join(("M" if i == 0 else "L") + f"{x},{y}" for i, (x, y) in enumerate(points))
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    return f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash} marker-end="url(#head)"/>'


def stage_box(row: int, col: int, title: str, command: str, tools: list[str], files: list[str]) -> list[str]:
    x, y = COL_X[col], ROW_Y[row]
    cx = x + BOX_W / 2
    source = title == "source"
    fill, stroke = ("#f3f4f6", "#9ca3af") if source else ("#ffffff", "#374151")
    out = [f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" stroke="{stroke}" '
           'stroke-width="1.5"/>',
           text(cx, y + 22, title, size=16, weight="bold"),
           text(cx, y + 42, command, size=12, family="monospace", fill="#374151")]
    spans = '<tspan fill="#6b7280"> · </tspan>'.join(
        f'<tspan fill="{TOOLS.get(tool, "#4b5563")}">{escape(tool)}</tspan>' for tool in tools)
    out.append(f'<text x="{cx}" y="{y + 64}" font-family="sans-serif" font-size="12" font-weight="bold" '
               f'text-anchor="middle">{spans}</text>')
    for i, name in enumerate(files):
        out.append(text(cx, y + BOX_H + 20 + 16 * i, name, size=11, family="monospace", fill="#374151"))
    return out


def svg() -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        'role="img" aria-labelledby="title">',
        '<title id="title">The genloop loop: source, collect, clean, augment, train, evaluate, export, serve</title>',
        '<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#374151"/></marker></defs>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        # orchestration band
        f'<rect x="{COL_X[0]}" y="14" width="{COL_X[3] + BOX_W - COL_X[0]}" height="44" rx="8" '
        'fill="#eff6ff" stroke="#1d4ed8" stroke-width="1"/>',
        text((COL_X[0] + COL_X[3] + BOX_W) / 2, 33,
             "Prefect flow genloop-pipeline (make run)  or  DVC pipeline dvc.yaml (dvc repro)",
             size=13, weight="bold", fill="#1d4ed8"),
        text((COL_X[0] + COL_X[3] + BOX_W) / 2, 50,
             "both run the same stage functions, collect to export (src/genloop/stages), and skip a stage whose inputs did not change",
             size=11.5, fill="#1e3a8a"),
    ]
    for stage in STAGES:
        parts += stage_box(*stage)
    mid = [y + BOX_H / 2 for y in ROW_Y]
    for col in range(3):  # row 0, left to right
        parts.append(arrow([(COL_X[col] + BOX_W, mid[0]), (COL_X[col + 1] - 3, mid[0])]))
    for col in range(3, 0, -1):  # row 1, right to left
        parts.append(arrow([(COL_X[col], mid[1]), (COL_X[col - 1] + BOX_W + 3, mid[1])]))
    right = COL_X[3] + BOX_W
    parts.append(arrow([(right, mid[0]), (right + 24, mid[0]), (right + 24, mid[1]), (right + 3, mid[1])]))
    # the loop back: a scheduled tick collects again and retrains only when the data changed
    left = COL_X[0]
    parts.append(arrow([(left, mid[1]), (left - 30, mid[1]), (left - 30, mid[0]), (left - 3, mid[0])],
                       colour="#7c3aed", dashed=True))
    parts.append(text(left - 38, (mid[0] + mid[1]) / 2, "genloop-loop (schedule.cron): new data, retrain",
                      size=11.5, fill="#7c3aed", extra=f' transform="rotate(-90 {left - 38} {(mid[0] + mid[1]) / 2})"'))
    # tracking band
    band_y = ROW_Y[1] + BOX_H + 72
    parts += [
        f'<rect x="{COL_X[0]}" y="{band_y}" width="{COL_X[3] + BOX_W - COL_X[0]}" height="62" rx="8" '
        'fill="#f0f9ff" stroke="#0369a1" stroke-width="1"/>',
        text((COL_X[0] + COL_X[3] + BOX_W) / 2, band_y + 22,
             "MLflow (mlflow/mlflow.db): one parent run per pipeline run, child runs vae and gan",
             size=13, weight="bold", fill="#0369a1"),
        text((COL_X[0] + COL_X[3] + BOX_W) / 2, band_y + 42,
             "params, losses, metrics, reports · Model Registry genloop-vae, genloop-gan, alias champion",
             size=11.5, fill="#0c4a6e"),
    ]
    for col in (1, 2, 3):  # export, evaluate, train write to MLflow
        x = COL_X[col] + BOX_W / 2
        parts.append(arrow([(x, ROW_Y[1] + BOX_H + 46), (x, band_y - 3)], colour="#0369a1", dashed=True))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "img" / "loop.svg"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(svg(), encoding="utf-8")
    print(f"wrote {target}")
