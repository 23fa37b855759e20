"""The latent atlas on MNIST t10k (run on demand): what each VAE dimension carries, measured.

Trains genloop's VAE (``genloop.stages.train.fit_vae``, the shipped ``train.vae`` params with ``beta``
and the training budget overridden) on the first 8,000 images, or loads it from ``--out`` when a
previous run saved it, then scores the latent means of the last 2,000 (held-out) images against their
morphometrics (``genloop.core.morphometrics``) and label: active units, MIG, DCI, a linear probe, and
which dimension carries slant, thickness and width. Writes traversal grids (rows: dimensions, columns
-3..+3 sd, centred on typical held-out images), a 2-D PCA map, the real-vs-generated morphometric gaps
(generated images labelled by a small CNN) and nearest-training-image attribution rows, and times the
atlas (wall and CPU seconds).

    python benchmarks/latent_atlas.py --images 400000 --betas 0.25,4
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from genloop.config import VAEConfig, load_params
from genloop.core import factors, morphometrics, traversal
from genloop.core.models.classifier import embed, normalise_features, train_classifier
from genloop.io.checkpoints import build_vae
from genloop.io.idx import read_idx_folder
from genloop.stages.train import fit_vae

REPO_ROOT = Path(__file__).resolve().parents[1]
FACTORS = ("slant", "thickness", "width", "height", "area", "length")


def labelled_rows(images: np.ndarray, labels: list[str], path: Path, cell: int = 56, margin: int = 110) -> None:
    """PNG of images (R, C, H, W) in [0, 1], one row per label written at its left."""
    from PIL import Image, ImageDraw

    rows, cols, h, w = images.shape
    scale, pad = max(1, cell // max(h, w)), 2
    canvas = Image.new("L", (margin + cols * (w * scale + pad) + pad, rows * (h * scale + pad) + pad), 255)
    draw = ImageDraw.Draw(canvas)
    tiles = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    for r in range(rows):
        y = pad + r * (h * scale + pad)
        draw.text((4, y + h * scale // 2 - 6), labels[r], fill=0)
        for c in range(cols):
            tile = Image.fromarray(np.kron(tiles[r, c], np.ones((scale, scale), np.uint8)))
            canvas.paste(tile, (margin + pad + c * (w * scale + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def trained_vae(cfg: VAEConfig, train: torch.Tensor, val: torch.Tensor, path: Path, seed: int) -> tuple[torch.nn.Module, float]:
    """The VAE from ``path`` if a previous run saved it, else trained and saved; (model, training seconds)."""
    vae = build_vae(cfg.model_dump(), (train.shape[2], train.shape[3]))
    if path.exists():
        vae.load_state_dict(torch.load(path, weights_only=True))
        return vae.eval(), 0.0
    torch.manual_seed(seed)
    trainer = fit_vae(cfg, train, val, torch.device("cpu"), torch.Generator().manual_seed(seed))
    started = time.perf_counter()
    epochs = math.ceil(cfg.images / len(train))
    for epoch in range(epochs):
        metrics = trainer.run_epoch()
        if (epoch + 1) % max(1, epochs // 4) == 0:
            print(f"beta {cfg.beta}: epoch {epoch + 1}/{epochs} val_loss {metrics['val_loss']:.1f}", flush=True)
    vae = trainer.state["vae"].eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vae.state_dict(), path)
    return vae, time.perf_counter() - started


def atlas_scores(mu: np.ndarray, logvar: np.ndarray, measures: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """The scores evaluate would log: active units, MIG/DCI against morphometrics + label, probe, PCA."""
    kl = factors.kl_per_dimension(mu, logvar)
    active = factors.active_units(kl)
    names = list(FACTORS) + ["label"]
    table = np.column_stack([morphometrics.as_matrix(measures, FACTORS), labels])
    ok = np.isfinite(table).all(axis=1)
    mig = factors.mig(mu[ok], table[ok])
    dci = factors.dci(mu[ok], table[ok])
    carriers = {name: {"dimension": int(mig.top_dimension[k]), "mig": round(float(mig.per_factor[k]), 3),
                       "mi_nats": round(float(mig.mutual_information[mig.top_dimension[k], k]), 3)}
                for k, name in enumerate(names)}
    fdir = factors.factor_directions(mu, morphometrics.as_matrix(measures, FACTORS))
    return {"measures": measures, "factor_direction_r2": dict(zip(FACTORS, np.round(fdir.r2, 3).tolist())),
            "kl_per_dim": np.round(kl, 3).tolist(), "active_units": active.tolist(),
            "mig": round(mig.score, 3), "mig_morphometrics": round(float(mig.per_factor[:-1].mean()), 3),
            "dci_disentanglement": round(dci.disentanglement, 3), "dci_completeness": round(dci.completeness, 3),
            "dci_informativeness": round(dci.informativeness, 3),
            "dci_informativeness_per_factor": dict(zip(names, np.round(dci.per_factor_informativeness, 3).tolist())),
            "probe_accuracy": round(factors.linear_probe_accuracy(mu, labels), 3),
            "pca_variance": np.round(factors.pca_map(mu)[1], 3).tolist(), "carriers": carriers}


@torch.no_grad()
def decode(vae: torch.nn.Module, latents: np.ndarray) -> np.ndarray:
    flat = torch.from_numpy(latents.reshape(-1, latents.shape[-1])).float()
    return vae.decoder(flat).numpy().reshape(*latents.shape[:-1], *vae.decoder(flat[:1]).shape[-2:])


def write_grids(vae: torch.nn.Module, mu: np.ndarray, labels: np.ndarray, scores: dict, tag: str,
                out: Path) -> list[Path]:
    """Three PNGs: every active dimension around one typical image; then slant, thickness and width
    around the typical held-out 0, 1, 4 and 7 (a factor should act alike on every digit), along the
    single dimension with the most mutual information, and along the factor's regression direction."""
    centres = np.stack([mu[labels == c][traversal.typical_codes(mu[labels == c], 1)[0]] for c in (0, 1, 4, 7)])
    dims = scores["active_units"][:10] or list(range(mu.shape[1]))
    dirs = traversal.axis_directions(dims, mu.shape[1])
    grid = traversal.traversal_latents(mu[traversal.typical_codes(mu, 1)], dirs, traversal.spread_along(mu, dirs), steps=9)
    kl = scores["kl_per_dim"]
    carried = {d: [n for n, c in scores["carriers"].items() if c["dimension"] == d] for d in dims}
    labels = [f"z{d} KL {kl[d]:.2f}\n{','.join(carried[d][:2])}" for d in dims]
    paths = [out / f"traversal-{tag}-{kind}.png" for kind in ("active", "factor-dims", "factor-directions")]
    labelled_rows(decode(vae, grid)[0], labels, paths[0])
    directions = factors.factor_directions(mu, morphometrics.as_matrix(scores["measures"], FACTORS))
    for kind, path in (("dimension", paths[1]), ("direction", paths[2])):
        rows, names = [], []
        for name in ("slant", "thickness", "width"):
            carrier = scores["carriers"][name]
            if kind == "dimension":
                u = traversal.axis_directions([carrier["dimension"]], mu.shape[1])
                title = f"{name}: z{carrier['dimension']}\nMIG {carrier['mig']:.2f}"
            else:
                u = directions.directions[[FACTORS.index(name)]]
                title = f"{name}: direction\nR2 {directions.r2[FACTORS.index(name)]:.2f}"
            grid = traversal.traversal_latents(centres, u, traversal.spread_along(mu, u), steps=9)
            rows.append(decode(vae, grid)[:, 0])
            names += [title] + [""] * (len(centres) - 1)
        labelled_rows(np.concatenate(rows), names, path)
    return paths


def pca_png(mu: np.ndarray, labels: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords, ratio = factors.pca_map(mu)
    fig, ax = plt.subplots(figsize=(5, 5))
    sc = ax.scatter(coords[:, 0], coords[:, 1], c=labels, cmap="tab10", s=3)
    ax.legend(*sc.legend_elements(), fontsize=7, loc="best", markerscale=0.8)
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%})")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def generated_gaps(vae: torch.nn.Module, classifier: torch.nn.Module, real: np.ndarray, real_labels: np.ndarray,
                   mu: np.ndarray, seed: int) -> list[dict]:
    """Morphometric gaps of as many decoded samples (z from a Gaussian fitted to the held-out means, as
    the shipped fitted prior does) as real held-out images, labelled by the classifier."""
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(mu.mean(0), np.cov(mu, rowvar=False), size=len(real)).astype(np.float32)
    with torch.no_grad():
        samples = vae.decoder(torch.from_numpy(z))
    gen_labels = embed(classifier, samples)[1].argmax(1).numpy()
    gaps = factors.distribution_gaps(morphometrics.measure(real), morphometrics.measure(samples[:, 0].numpy()),
                                     real_labels, gen_labels)
    return [{"measure": g.measure, "label": g.label, "ks": round(g.ks, 3), "w1_sd": round(g.wasserstein_sd, 3),
             "rel": round(g.relative_difference, 3), "sentence": factors.gap_sentence(g)} for g in gaps]


def attribution_png(vae: torch.nn.Module, classifier: torch.nn.Module, train: torch.Tensor, out: Path, tag: str) -> None:
    """Eight samples of the standard decoder, each beside its five nearest training images (CNN features)."""
    with torch.no_grad():
        samples = vae.decoder(torch.randn(8, vae.latent_dim, generator=torch.Generator().manual_seed(1)))
    feats = normalise_features(embed(classifier, samples)[0])
    ref = normalise_features(embed(classifier, train)[0])
    idx, _ = traversal.nearest_neighbours(feats, ref, k=5)
    rows = traversal.attribution_rows(samples[:, 0].numpy(), train[:, 0].numpy(), idx)
    labelled_rows(rows, ["sample | nearest"] * len(rows), out / f"attribution-{tag}.png")


def timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)


def run_one(beta: float, args: argparse.Namespace, data: dict, classifier: torch.nn.Module) -> dict:
    params = load_params(REPO_ROOT / "params.yaml")
    cfg = VAEConfig(**{**params.train.vae.model_dump(), "beta": beta, "images": args.images, "prior": "standard"})
    tag = f"beta{beta:g}-{args.images // 1000}k"
    vae, train_s = trained_vae(cfg, data["train"], data["test"], Path(args.out) / f"vae-{tag}.pt", args.seed)
    with torch.no_grad():
        mu, logvar = (t.numpy() for t in vae.encode(data["test"]))
    measures, m_wall, m_cpu = timed(morphometrics.measure, data["test_u8"])
    scores, s_wall, s_cpu = timed(atlas_scores, mu, logvar, measures, data["test_labels"])
    grids = write_grids(vae, mu, data["test_labels"], scores, tag, Path(args.out))
    gaps = generated_gaps(vae, classifier, data["test_u8"], data["test_labels"], mu, args.seed)
    pca_png(mu, data["test_labels"], Path(args.out) / f"pca-{tag}.png")
    attribution_png(vae, classifier, data["train"], Path(args.out), tag)
    worst = sorted((g for g in gaps if g["label"] is not None), key=lambda g: -g["w1_sd"])[:5]
    return {"tag": tag, "beta": beta, "latent_dim": cfg.latent_dim, "images": args.images, "train_s": round(train_s, 1),
            "morphometrics_s": {"wall": m_wall, "cpu": m_cpu, "images": len(data["test_u8"])},
            "scores_s": {"wall": s_wall, "cpu": s_cpu}, **scores, "grids": [str(p) for p in grids],
            "gaps_overall": [g for g in gaps if g["label"] is None], "largest_class_gaps": worst}


def drop_arrays(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "measures"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data" / "mnist-t10k"))
    parser.add_argument("--images", type=int, default=400_000, help="training images seen per VAE")
    parser.add_argument("--betas", default="0.25,4", help="comma-separated β values (0.25: the shipped one)")
    parser.add_argument("--out", default="outputs/latent_atlas")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = read_idx_folder(Path(args.data))
    x = torch.from_numpy(images).float().div(255).unsqueeze(1)
    data = {"train": x[:8000], "test": x[8000:], "test_u8": images[8000:], "test_labels": labels[8000:].astype(np.int64)}
    clf_path = Path(args.out) / "classifier.pt"
    if clf_path.exists():
        classifier = torch.load(clf_path, weights_only=False).eval()
    else:
        classifier = train_classifier(x[:8000], torch.from_numpy(labels[:8000]).long(), 64, 10, 3, args.seed)
        clf_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(classifier, clf_path)
    results = [drop_arrays(run_one(float(b), args, data, classifier)) for b in args.betas.split(",")]
    Path(args.out, "atlas.json").write_text(json.dumps(results, indent=1))
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k not in ("gaps_overall", "largest_class_gaps")}))
        for g in r["gaps_overall"] + r["largest_class_gaps"]:
            print(f"  {g['sentence']} (KS {g['ks']}, W1/sd {g['w1_sd']})")


if __name__ == "__main__":
    main()
