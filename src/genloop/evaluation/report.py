"""reports/index.html: what evaluate found, readable offline (PNG files beside it, no scripts, no CDN).

The metrics table with the real-vs-real floor (recognisable share and both FIDs first), sample
grids and latent interpolations of both models, their loss curves (from each training's
``history.csv``) and the class distribution of samples against the real one. ``report`` is what
``reports/metrics_detail.json`` holds. Figures are written into a fresh ``reports/figures/`` swapped in whole,
then ``index.html``; both atomically.
"""
from __future__ import annotations

import csv
import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genloop.io import atomic
from genloop.config import MODEL_TITLES, MODELS, Params
from genloop.io.imaging import grid_image, labelled_rows_image
from genloop.core.metric_names import FLOOR_SUFFIX, GENERATOR_METRICS, LABEL_FIDELITY
from genloop.paths import ProjectPaths

LOSS_COLUMNS = {"vae": ("train_loss", "val_loss"), "gan": ("d_loss", "g_loss")}
LOSS_TITLES = {"vae": "VAE loss (negative ELBO per image, nats)", "gan": "GAN losses"}
# How to read each metric in the table: which way is better, or what real data scores.
READING = {
    "recognisable_share": "share the classifier gives one class with probability >= {confidence}; higher is better",
    "fid": "lower is better (features of the CNN classifier)",
    "fid_alt": "lower is better (features of a second, MLP classifier): a real win lowers both",
    "kid_mean": "lower is better", "kid_std": "spread over subsets",
    "is_mean": "higher is better (at most the class count)", "is_std": "spread over splits",
    "precision": "higher: samples look real", "recall": "higher: samples cover the real variety",
    "density": "about 1 for real data", "coverage": "higher: more real neighbourhoods reached",
    "class_tvd": "lower: class mix like the training data",
    "nn_train_distance_median": "RMS pixel distance to nearest training image",
    "nn_train_distance_ratio": "about 1 for real data; well below 1: copying",
    "train_copy_share": "share nearer a training image than real images' 1st percentile",
}
VAE_READING = {
    "test_neg_elbo": "nats per test image (BCE summed + KL), lower is better",
    "test_nll_iwae": "nats per test image, importance-weighted; at most the negative ELBO",
    "test_recon_ssim": "reconstruction SSIM in [0, 1], higher is better",
}


# The membership audit's attacks (genloop.core.membership), by the name its metrics carry: mia_{attack}_auc, ...
MIA_ATTACKS = {"distance": "distance to the nearest generated sample (pixels, black box)",
               "elbo": "the image's ELBO (the VAE's own likelihood, white box)"}


@dataclass(frozen=True)
class HtmlReport:
    index: Path
    figures: Path
    files: tuple[str, ...]  # figure file names, relative to ``figures``


def _png(fig: Any) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def read_history(path: Path) -> dict[str, list[float]]:
    """Columns of a training ``history.csv`` as float lists (empty when the file is missing)."""
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                continue
    return columns


def loss_curve_png(history: dict[str, list[float]], columns: tuple[str, ...], title: str) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.add_subplot()
    epochs = history.get("epoch") or list(range(1, len(next(iter(history.values()), [])) + 1))
    # a method with other losses (DP-MERF's mmd_loss) plots what it recorded rather than an empty frame
    shown = [c for c in columns if c in history] or [c for c in history if c not in ("epoch", "images", "seconds")]
    for column in shown:
        ax.plot(epochs, history[column], marker="." if len(epochs) < 30 else None, label=column)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(fontsize=8)
    return _png(fig)


def class_distribution_png(shares: dict[str, dict[str, float]], names: dict[str, str] | None = None) -> bytes:
    """Bars per class (named by ``names``, label -> class name, where the data names them)."""
    from matplotlib.figure import Figure

    class_label = names or {}
    sets = [n for n in ("real_train", "real_held_out", *MODELS) if n in shares]
    labels = {"real_train": "real (train labels)", "real_held_out": "real held-out (classified)",
              "vae": "VAE samples", "gan": "GAN samples"}
    classes = sorted(shares[sets[0]], key=int)
    x = np.arange(len(classes))
    width = 0.8 / len(sets)
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    for i, name in enumerate(sets):
        ax.bar(x + (i - (len(sets) - 1) / 2) * width, [shares[name][c] for c in classes], width, label=labels[name])
    ticks = [class_label.get(c, c) for c in classes]
    angled = tick_style(ticks)
    ax.set_xticks(x, ticks, **angled)
    ax.set_xlabel("class (classifier's argmax for samples)")
    ax.set_ylabel("share")
    ax.set_title("Class distribution", fontsize=10)
    ax.legend(fontsize=8, ncols=2)
    ax.grid(axis="y", alpha=0.3)
    if angled:
        fig.set_size_inches(7, 4.2)
        fig.subplots_adjust(bottom=0.35)
    return _png(fig)


def tick_style(names: list[str]) -> dict[str, Any]:
    """Class names that would overlap side by side (``faces``, ``transport-map``) are set at an angle;
    short ones (the digits' 0-9) stay as they were."""
    return {"rotation": 40, "ha": "right", "fontsize": 8} if max(map(len, names), default=0) > 3 else {}


def roc_png(membership: dict[str, Any]) -> bytes:
    """The audit's ROC curves (TPR against FPR, linear and log-log) with chance's diagonal."""
    from matplotlib.figure import Figure

    fpr = np.asarray(membership["fpr_grid"])
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, log in zip(axes, (False, True)):
        keep = fpr > 0 if log else slice(None)
        ax.plot(fpr[keep], fpr[keep], color="grey", lw=0.8, ls="--", label="chance (no leak)")
        for kind, attacks in membership.get("tpr", {}).items():
            for attack, tpr in attacks.items():
                ax.step(fpr[keep], np.asarray(tpr)[keep], where="post", label=f"{MODEL_TITLES.get(kind, kind)}, {attack}")
        ax.set_xlabel("false-positive rate (held-out called member)")
        ax.set_ylabel("true-positive rate (training image found)")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylim(1e-3, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Membership inference ROC", fontsize=10)
    return _png(fig)


def _privacy_section(report: dict[str, Any]) -> str:
    membership = report.get("membership") or {}
    if not membership:
        return "<p class=small>No membership audit (<code>evaluate.audit_images</code> is 0).</p>"

    def cells(name: str) -> str:
        return "".join(f"<td>{_fmt(report.get(k, {}).get(name))}</td>" for k in MODELS)

    rows = []
    for attack, reading in MIA_ATTACKS.items():
        if any(f"mia_{attack}_auc" in report.get(k, {}) for k in MODELS):
            auc, tpr = cells(f"mia_{attack}_auc"), cells(f"mia_{attack}_tpr_at_1fpr")
            rows.append(f"<tr><th>{attack}: ROC AUC</th>{auc}<td class=note>{html.escape(reading)}</td></tr>")
            rows.append(f"<tr><th>{attack}: TPR at 1% FPR</th>{tpr}<td class=note>"
                        "training images found while calling 1% of held-out ones members</td></tr>")
    head = "<tr><th>attack</th>" + "".join(f"<th>{MODEL_TITLES[k]}</th>" for k in MODELS) + "<th>reading</th></tr>"
    n = membership.get("images_per_side", "?")
    return (f"""<p class=small>How well an attacker tells the {n} training images (clean training split) from
{n} held-out ones ({html.escape(str(membership.get("non_members", "held-out")))}), seeded subsets of equal size.
<strong>ROC AUC 0.5 = no leak</strong> (1: every training image told apart; at this count chance spreads
about &plusmn;{2 * membership.get("auc_chance_se", float("nan")):.2f}); the TPR at 1% FPR is what matters when
a few images leak. The distance attack searches {membership.get("generated_samples", "?")} generated samples
(GAN-leaks, Chen et al. 2020). A small training set leaks more.</p>
<table>{head}""" + "".join(rows) + "</table>")


def _fmt(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    return f"{value:.4g}"


def _metrics_table(report: dict[str, Any], confidence: float) -> str:
    """Every generator metric, the most readable first (recognisable share, then the two FIDs)."""

    first = ("recognisable_share", "fid", "fid_alt")
    rows = []
    for name in (*first, *(m for m in GENERATOR_METRICS if m not in first)):
        cells = "".join(f"<td>{_fmt(report.get(k, {}).get(name))}</td>" for k in MODELS)
        floor = report.get("real_floor", {}).get(name, report.get("vae", {}).get(name + FLOOR_SUFFIX))
        note = READING.get(name, "").format(confidence=f"{confidence:g}")
        rows.append(f"<tr><th>{name}</th>{cells}<td class=floor>{_fmt(floor)}</td>"
                    f"<td class=note>{html.escape(note)}</td></tr>")
    head = "<tr><th>metric</th>" + "".join(f"<th>{MODEL_TITLES[k]}</th>" for k in MODELS)
    return (f"<table>{head}<th>real vs real</th><th>reading</th></tr>" + "".join(rows) + "</table>")


def _vae_table(report: dict[str, Any]) -> str:
    vae = report.get("vae", {})
    rows = [f"<tr><th>{k}</th><td>{_fmt(vae.get(k))}</td><td class=note>{html.escape(v)}</td></tr>"
            for k, v in VAE_READING.items() if k in vae]
    return "<table><tr><th>metric</th><th>VAE</th><th>reading</th></tr>" + "".join(rows) + "</table>" if rows else ""


def privacy_line(scores: dict[str, Any]) -> str:
    """``ε = 3.2 at δ = 1e-05`` for a model trained with DP-SGD, ``not private`` otherwise."""
    epsilon, delta = scores.get("epsilon"), scores.get("delta")
    if not isinstance(epsilon, (int, float)) or not isinstance(delta, (int, float)):
        return "not private"
    return f"ε = {epsilon:.3g} at δ = {delta:.3g}"


def _privacy_list(report: dict[str, Any]) -> str:
    items = "".join(f"<li>{MODEL_TITLES[k]}: {html.escape(privacy_line(report.get(k, {})))}</li>" for k in MODELS)
    return (f"<ul class=privacy>{items}</ul><p class=small>Differential privacy of the training (DP-SGD, "
            "train.&lt;model&gt;.privacy): a model with ε at δ changes the probability of any output by at most a "
            "factor e<sup>ε</sup> (plus δ) whether or not one training image was in its data; smaller is more "
            "private. The GAN's budget is its discriminator's, the only part that sees real images.</p>")


def _fidelity_table(report: dict[str, Any]) -> str:
    """Label fidelity of the conditional models, mean then per class (named as the data names it), beside
    the classifier's floor."""
    names = report.get("class_names") or {}
    kinds = [k for k in MODELS if LABEL_FIDELITY in report.get(k, {})]
    if not kinds:
        return ""
    keys = [LABEL_FIDELITY] + sorted({k for kind in kinds for k in report[kind]
                                      if k.startswith(LABEL_FIDELITY + "_") and k.split("_")[-1].isdigit()},
                                     key=lambda k: int(k.split("_")[-1]))
    rows = []
    for key in keys:
        cells = "".join(f"<td>{_fmt(report[k].get(key))}</td>" for k in kinds)
        floor = report[kinds[0]].get(key + FLOOR_SUFFIX)
        label = key.split("_")[-1]
        name = "mean over classes" if key == LABEL_FIDELITY else f"class {names.get(label, label)}"
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}<td class=floor>{_fmt(floor)}</td></tr>")
    head = "<tr><th>label fidelity</th>" + "".join(f"<th>{MODEL_TITLES[k]}</th>" for k in kinds)
    return (f"<h2>Label fidelity (conditional models)</h2><p class=small>Share of the samples generated for class "
            f"k that the classifier puts in k; the floor is its accuracy on held-out real images of class k.</p>"
            f"<table>{head}<th>real (classifier accuracy)</th></tr>" + "".join(rows) + "</table>")


def _tstr_table(report: dict[str, Any]) -> str:
    """TSTR of the conditional models beside its floor: the same classifier trained on the real training split."""
    kinds = [k for k in MODELS if "tstr_accuracy" in report.get(k, {})]
    if not kinds:
        return ""
    rows = "".join(f"<tr><th>{MODEL_TITLES[k]}</th><td>{_fmt(report[k]['tstr_accuracy'])}</td>"
                   f"<td class=floor>{_fmt(report[k].get('tstr_real_accuracy'))}</td></tr>" for k in kinds)
    return ("<h2>Train on synthetic, test on real (conditional models)</h2><p class=small>Accuracy on the held-out "
            "real images of the evaluation classifier's architecture trained on labelled samples (as many as the "
            "training split holds, labels drawn as its labels), beside the same classifier trained on the real "
            "training split: how much of the real data's use a synthetic release keeps.</p>"
            "<table><tr><th>model</th><th>TSTR accuracy</th><th>trained on real</th></tr>" + rows + "</table>")


def _likelihood_images(report: dict[str, Any]) -> str:
    test, iwae = report.get("test_images", "?"), report.get("iwae_test_images")
    return f"{test} test images" + (f"; IWAE on a seeded {iwae}" if iwae is not None and iwae != test else "")


def _img(name: str, alt: str) -> str:
    alt = html.escape(alt)
    return f'<figure><img src="figures/{name}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.92em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,th:last-child{text-align:left}td.floor{background:#f3f6fa}td.note{text-align:left;color:#666}
.row{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}figure{margin:0}
img{image-rendering:pixelated;max-width:100%}figcaption{font-size:.85em;color:#555}
p.small{font-size:.85em;color:#555;max-width:60em}
.warning{border:2px solid #c62828;background:#fdecea;padding:.6em 1em;margin:1em 0}.warning h2{margin-top:0;border:0;color:#c62828}
"""


def trust_box(report: dict[str, Any]) -> str:
    """A red box listing why the figures below cannot be trusted (``report["trust"]``: model -> reasons)."""
    doubts = report.get("trust") or {}
    reasons = list(dict.fromkeys(r for kind in MODELS for r in doubts.get(kind, [])))
    if not reasons:
        return ""
    models = ", ".join(MODEL_TITLES[k] for k in MODELS if doubts.get(k))
    items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons)
    return (f'<div class=warning role=alert><h2>This evaluation cannot be trusted ({models})</h2><ul>{items}</ul>'
            "<p class=small>The promotion gate refuses such models while "
            "<code>export.promotion.require_trusted_evaluation</code> is true.</p></div>")


def _explain_link(explain: str | None) -> str:
    if not explain:
        return ""
    return (f'<p><a href="{html.escape(explain)}">Latent atlas</a>: what each latent dimension (VAE) or direction '
            "(GAN) does, measured; where samples come from; real vs generated shapes per class.</p>")


def render_html(report: dict[str, Any], figures: list[tuple[str, str]], meta: dict[str, str],
                confidence: float = 0.9, explain: str | None = None) -> str:
    """The page: metrics first, then every figure; ``figures`` are (file name, caption) pairs; ``explain``
    the latent atlas's page beside it (genloop.evaluation.explain), linked at the top."""
    by_group: dict[str, list[str]] = {}
    for name, caption in figures:
        by_group.setdefault(name.split("_")[0].removesuffix(".png"), []).append(_img(name, caption))
    section = lambda key: '<div class=row>' + "".join(by_group.get(key, [])) + "</div>"  # noqa: E731
    classifier = report.get("classifier", {})
    info = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in meta.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>genloop evaluation</title><style>{STYLE}</style></head>
<body>
<h1>genloop evaluation: VAE vs GAN</h1>
<ul class=small>{info}</ul>
{trust_box(report)}
{_explain_link(explain)}
<h2>Metrics</h2>
<p class=small>{report.get("samples_per_model", "?")} samples per model against the clean training split; the
<em>real vs real</em> column scores the held-out real images (val + test) the same way, i.e. what a perfect
generator would get. <em>recognisable_share</em> is the plainest figure: the share of images a classifier
trained on the real training split puts in one class with probability at least {confidence:g} (held-out
accuracy {_fmt(classifier.get("held_out_accuracy"))}). Its penultimate layer gives the features of FID, KID
and the k-NN metrics; <em>fid_alt</em> is FID under a second network of another kind (an MLP, another seed;
held-out accuracy {_fmt(classifier.get("alt_held_out_accuracy"))}), so a model that only suits one feature
space shows up: compare both with their floors. FID uses the features raw, as FID uses Inception's raw
features; for KID and the k-NN metrics each vector is rescaled to L2 norm &radic;d, so KID's kernel is
(cos + 1)<sup>3</sup> and KID lies in [0, 14]. Precision, recall, density and coverage: k-NN manifolds
(Naeem et al. 2020). Nearest-neighbour distances are RMS pixel distances in [0, 1].</p>
{_metrics_table(report, confidence)}
<h2>Privacy</h2>
{_privacy_list(report)}
{_fidelity_table(report)}
{_tstr_table(report)}
<h2>VAE likelihood ({_likelihood_images(report)})</h2>
{_vae_table(report)}
<h2>Privacy audit</h2>
{_privacy_section(report)}
{section("privacy")}
<h2>Samples</h2>
{section("samples")}
<h2>Latent interpolations</h2>
<p class=small>Each row walks (slerp) between two random latent vectors.</p>
{section("interpolation")}
<h2>Class distribution</h2>
{section("classes")}
<h2>Training losses</h2>
{section("losses")}
</body></html>
"""


def write_report(params: Params, paths: ProjectPaths, report: dict[str, Any], samples: dict[str, np.ndarray],
                 interpolations: dict[str, np.ndarray], real: np.ndarray,
                 per_class: dict[str, tuple[list[int], np.ndarray]] | None = None,
                 explain: str | None = None) -> HtmlReport:
    """Write ``reports/figures/*.png`` and ``reports/index.html`` from evaluate's results.

    ``per_class``: for a conditional model, its classes and samples shaped (classes, per row, [C,] H, W),
    shown one row per class, labelled with the class name where ``report["class_names"]`` has one.
    Images may be grey or colour (C = 3): the grids are drawn as they are."""
    from genloop.io import dvcio

    config = params.evaluate
    figures: list[tuple[str, str, bytes]] = [("samples_real.png", "Real held-out images", grid_image(real))]
    for kind in MODELS:
        if kind in samples:
            figures.append((f"samples_{kind}.png", f"{MODEL_TITLES[kind]} samples", grid_image(samples[kind])))
    names = report.get("class_names") or {}
    for kind, (classes, rows) in (per_class or {}).items():
        figures.append((f"samples_{kind}_per_class.png", f"{MODEL_TITLES[kind]} samples, one row per class (label at left)",
                        labelled_rows_image(np.asarray(rows).reshape(-1, *np.asarray(rows).shape[2:]),
                                            [names.get(str(c), str(c)) for c in classes])))
    for kind in MODELS:
        if kind in interpolations:
            figures.append((f"interpolation_{kind}.png", f"{MODEL_TITLES[kind]} latent interpolations",
                            grid_image(interpolations[kind], ncols=config.interpolation_steps)))
    if "class_shares" in report:
        figures.append(("classes.png", "Class distribution of samples vs real",
                        class_distribution_png(report["class_shares"], report.get("class_names"))))
    if (report.get("membership") or {}).get("tpr"):
        figures.append(("privacy_roc.png", "Membership-inference ROC curves (diagonal: no leak)",
                        roc_png(report["membership"])))
    for kind in MODELS:
        history = read_history(paths.train(kind) / "history.csv")
        if history:
            figures.append((f"losses_{kind}.png", LOSS_TITLES[kind],
                            loss_curve_png(history, LOSS_COLUMNS[kind], LOSS_TITLES[kind])))

    figures_dir = paths.reports / "figures"
    with atomic.atomic_dir(figures_dir) as tmp:
        for name, _, data in figures:
            (tmp / name).write_bytes(data)
    try:
        data_hash = dvcio.read_dvc_hash(paths.data_dvc)
    except Exception:  # a project without data.dvc still gets its report
        data_hash = "untracked"
    meta = {"written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "data (dvc md5)": data_hash,
            "seed": str(params.seed)}
    index = paths.reports / "index.html"
    atomic.write_text(index, render_html(report, [(n, c) for n, c, _ in figures], meta,
                                         config.recognisable_confidence, explain))
    return HtmlReport(index=index, figures=figures_dir, files=tuple(n for n, _, _ in figures))
