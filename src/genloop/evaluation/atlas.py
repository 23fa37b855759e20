"""The latent atlas of one trained model: what its latent dimensions (VAE) or principal directions (GAN)
do to the images, in measured terms (morphometrics and the class), and where its samples come from.

Built from the pure blocks of ``genloop.core`` (morphometrics, factors, traversal) on the evaluation's
own data (``genloop.evaluation.scoring.EvaluationData``: the clean splits and the classifier), so the
evaluate stage and ``genloop explain`` on a registered version compute the same thing:

- VAE (with its encoder): KL per dimension and the active units; a traversal grid (rows: active
  dimensions, columns -3..+3 sd, centred on a typical encoded held-out image) decoded with the VAE's
  own decoder (not the fitted-prior sampler, whose input is not the encoder's space); MIG and DCI of
  the latent means against the morphometrics and the label; per factor the best single axis (MIG) and
  the best latent direction (held-out R²) with a traversal grid of the top three directions; a PCA map
  of the encoded held-out images by class and a linear probe's class accuracy.
- GAN: GANSpace directions (PCA of the generator's first layer) with the same traversal grid, and the
  same factor scores of the samples' coordinates along the directions; per direction, the measure it
  moves most (correlation of the measure with the step along it).
- Both: the morphometric gaps, real held-out vs generated, per measure and class, as sentences; and
  attribution: a few samples beside their nearest training images under the classifier's features.

Colour images are measured on their luminance; the stroke measures (length, thickness) are left out of
the factor scores there (see ``genloop.core.morphometrics``), and the atlas says so.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genloop.core import factors, morphometrics, traversal
from genloop.core.dp_merf import MerfGenerator
from genloop.core.label_fidelity import draw_labels
from genloop.core.models.classifier import embed, normalise_features
from genloop.io.imaging import channels_last, labelled_rows_image

# The scores logged as MLflow metrics (on each model's training run) and kept in reports/explain.json.
EXPLAIN_METRICS = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "active_units",
                   "probe_accuracy")
STROKE_MEASURES = ("length", "thickness")  # meaningless on filled (colour) shapes: left out of the factor scores
STEPS, SPAN = 7, 3.0                        # traversal columns: -3 .. +3 sd
MAX_ROWS = 10                               # dimensions or directions per traversal grid
ATTRIBUTION_SAMPLES, ATTRIBUTION_K = 8, 5


@dataclass
class ModelAtlas:
    """One model's atlas: ``scores`` (numbers, EXPLAIN_METRICS among them), ``carriers`` (factor ->
    which axis/direction carries it), ``gaps`` (real vs generated), figures as (file name, caption, PNG
    bytes), and what could not be computed, with the reason."""

    kind: str
    scores: dict[str, float] = field(default_factory=dict)
    carriers: dict[str, dict[str, Any]] = field(default_factory=dict)
    directions: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    figures: list[tuple[str, str, bytes]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        """The EXPLAIN_METRICS this atlas has (finite values only), for MLflow."""
        return {k: float(self.scores[k]) for k in EXPLAIN_METRICS
                if k in self.scores and np.isfinite(self.scores[k])}


@dataclass(frozen=True)
class Generator:
    """What the atlas needs of a model: its sampler ((z) or (z, label) -> images), latent size, trained
    classes (None: unconditional); for a VAE its whole network (encoder + decoder), for a GAN the
    feature map GANSpace takes the PCA of (None: the images themselves)."""

    kind: str
    sampler: torch.nn.Module | Any
    latent_dim: int
    classes: list[int] | None = None
    vae: torch.nn.Module | None = None
    features: Any = None


def factor_names(colour: bool) -> tuple[str, ...]:
    """The morphometrics scored as factors: all of them on grey images, no stroke measures on colour."""
    return tuple(m for m in morphometrics.MEASURES if not (colour and m in STROKE_MEASURES))


def measure_images(images: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Morphometrics of images in [0, 1] shaped (N, C, H, W) (colour: on luminance)."""
    return morphometrics.measure(channels_last(np.asarray(images)))


@torch.no_grad()
def _run(fn: Any, z: torch.Tensor, labels: torch.Tensor | None, batch: int = 1024) -> torch.Tensor:
    """``fn(z)`` or ``fn(z, labels)`` in batches, clamped to [0, 1]."""
    out = [fn(zb) if labels is None else fn(zb, lb)
           for zb, lb in zip(z.split(batch), (labels.split(batch) if labels is not None else [None] * len(z)))]
    return torch.cat(out).float().clamp(0, 1)


def decode_grid(fn: Any, latents: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Images (M, R, S, C, H, W) of traversal latents (M, R, S, D); ``labels`` (M,): one class per centre."""
    m, r, s, d = latents.shape
    flat = torch.from_numpy(np.ascontiguousarray(latents.reshape(-1, d), dtype=np.float32))
    lab = None if labels is None else torch.as_tensor(np.repeat(np.asarray(labels), r * s), dtype=torch.long)
    images = _run(fn, flat, lab).numpy()
    return images.reshape(m, r, s, *images.shape[1:])


def grid_png(images: np.ndarray, labels: list[str]) -> bytes:
    """One row per label of (R, S, C, H, W) images, the label written at the row's left."""
    return labelled_rows_image(images.reshape(-1, *images.shape[2:]), labels)


def pca_png(codes: np.ndarray, labels: np.ndarray, names: dict[int, str], title: str) -> bytes:
    """Scatter of the codes' first two principal axes, coloured by class."""
    from matplotlib.figure import Figure

    coords, ratio = factors.pca_map(codes)
    fig = Figure(figsize=(5, 4.6))
    ax = fig.add_subplot()
    for i, c in enumerate(np.unique(labels)):
        pick = labels == c
        ax.scatter(coords[pick, 0], coords[pick, 1], s=4, color=f"C{i % 10}", label=names.get(int(c), str(c)))
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%})" if len(ratio) > 1 else "PC2")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, markerscale=2, loc="best", ncols=2)
    return _png(fig)


def _png(fig: Any) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def factor_table(measures: dict[str, np.ndarray], labels: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(N, K + 1): the measures in ``names`` order, then the label (the discrete factor)."""
    return np.column_stack([morphometrics.as_matrix(measures, names), np.asarray(labels, dtype=np.float64)])


def latent_scores(codes: np.ndarray, table: np.ndarray, names: tuple[str, ...], seed: int,
                  atlas: ModelAtlas) -> factors.FactorDirections | None:
    """MIG, DCI and the probe of ``codes`` against ``table`` (factor_table); per factor its best axis
    (MIG) and the R² of its best direction. Fills ``atlas``; returns the factor directions."""
    ok = np.isfinite(table).all(axis=1) & np.isfinite(codes).all(axis=1)
    z, f = codes[ok], table[ok]
    # a collapsed GAN draws (nearly) one class: too few of the others to fit a classifier on
    one_class = bool(np.bincount(f[:, -1].astype(np.int64)).max() > len(f) - 10)
    if one_class:
        atlas.skipped.append("the label in DCI and the linear probe: (nearly) all images fall in one class")
    try:
        mig = factors.mig(z, f)
        # the measures are counts of pixels (integers) but continuous factors all the same; the label is discrete
        dci = factors.dci(z, f[:, :-1] if one_class else f, [False] * len(names) + [True] * (not one_class), seed=seed)
        directions = factors.factor_directions(z, f[:, :-1], seed=seed)
    except ValueError as exc:  # too few complete rows for the fits
        atlas.skipped.append(f"factor scores: {exc}")
        return None
    atlas.scores.update({"mig": mig.score, "mig_morphometrics": float(mig.per_factor[:-1].mean()),
                         "dci_disentanglement": dci.disentanglement, "dci_completeness": dci.completeness,
                         "dci_informativeness": dci.informativeness})
    try:
        if not one_class:
            atlas.scores["probe_accuracy"] = factors.linear_probe_accuracy(z, f[:, -1].astype(np.int64), seed=seed)
    except ValueError as exc:
        atlas.skipped.append(f"linear probe: {exc}")
    informative = list(dci.per_factor_informativeness) + [float("nan")] * one_class
    for k, name in enumerate((*names, "label")):
        atlas.carriers[name] = {
            "axis": int(mig.top_dimension[k]), "mig": float(mig.per_factor[k]),
            "mi_nats": float(mig.mutual_information[mig.top_dimension[k], k]),
            "informativeness": float(np.clip(informative[k], 0.0, 1.0)),  # a constant factor's R² is meaningless
            **({"direction_r2": float(directions.r2[k])} if k < len(names) else {}),
        }
    return directions


def attribution(data: Any, samples: torch.Tensor, batch_size: int) -> tuple[bytes, list[float]]:
    """A few samples, each followed by its nearest training images under the classifier's (normalised)
    features; and the median feature distance of each sample's nearest one."""
    shown = samples[:ATTRIBUTION_SAMPLES]
    feats = normalise_features(embed(data.classifier, shown, batch_size)[0])
    idx, dist = traversal.nearest_neighbours(feats, data.reference_features, k=ATTRIBUTION_K)
    rows = traversal.attribution_rows(shown.numpy(), data.reference.numpy(), idx)
    labels = [f"d={d:.2f}" for d in dist[:, 0]]
    return grid_png(rows, labels), dist[:, 0].tolist()


def morphometric_gaps(real: dict[str, np.ndarray], real_labels: np.ndarray, generated: dict[str, np.ndarray],
                      generated_labels: np.ndarray, names: dict[int, str]) -> list[dict[str, Any]]:
    """Every gap (overall first, then per class, largest Wasserstein/sd first) with its sentence."""
    named = {c: n for c, n in names.items() if n != str(c)} or None
    lookup = None if named is None else {c: named.get(c, f"{c}s") for c in set(real_labels.tolist())}
    gaps = factors.distribution_gaps(real, generated, real_labels, generated_labels)
    rows = [{"measure": g.measure, "label": g.label, "n_real": g.n_real, "n_generated": g.n_generated,
             "mean_real": g.mean_real, "mean_generated": g.mean_generated,
             "relative_difference": g.relative_difference, "wasserstein_sd": g.wasserstein_sd, "ks": g.ks,
             "sentence": factors.gap_sentence(g, lookup)} for g in gaps]
    return sorted(rows, key=lambda r: (r["label"] is not None, -np.nan_to_num(r["wasserstein_sd"])))


@dataclass(frozen=True)
class Drawn:
    """Samples the atlas drew once and reuses: latents, images, labels and morphometrics."""

    z: torch.Tensor
    images: torch.Tensor
    labels: np.ndarray
    measures: dict[str, np.ndarray]


def generated_samples(gen: Generator, data: Any, n: int, seed: int, batch_size: int) -> Drawn:
    """``n`` samples (z ~ N(0, I), seeded) and their labels: the requested ones for a conditional model
    (drawn like the training labels), the classifier's argmax otherwise."""
    z = torch.randn(n, gen.latent_dim, generator=torch.Generator().manual_seed(seed))
    if gen.classes is not None:
        requested = draw_labels(np.asarray(data.reference_labels), n, seed)
        images, labels = _run(gen.sampler, z, requested, batch_size), requested.numpy()
    else:
        images = _run(gen.sampler, z, None, batch_size)
        labels = embed(data.classifier, images, batch_size)[1].argmax(1).numpy()
    return Drawn(z, images, labels, measure_images(images))


def held_out(data: Any, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """The first ``n`` held-out images (val + test) and their true labels."""
    return data.held_out[:n], np.asarray(data.held_out_labels)[:n].astype(np.int64)


def shared_parts(gen: Generator, data: Any, atlas: ModelAtlas, images: int, seed: int, batch_size: int
                 ) -> tuple[dict[str, np.ndarray], np.ndarray, Drawn]:
    """Gaps and attribution (both models); returns the real held-out measures and labels, and the samples."""
    real, real_labels = held_out(data, images)
    real_measures = measure_images(real)
    drawn = generated_samples(gen, data, len(real), seed, batch_size)
    atlas.gaps = morphometric_gaps(real_measures, real_labels, drawn.measures, drawn.labels, data.class_names or {})
    png, nearest = attribution(data, drawn.images, batch_size)
    atlas.scores["attribution_nearest_distance_median"] = float(np.median(nearest))
    atlas.figures.append((f"{gen.kind}_attribution.png", f"{gen.kind.upper()}: samples (left) and their "
                          f"{ATTRIBUTION_K} nearest training images under the classifier's features", png))
    return real_measures, real_labels, drawn


def build(gen: Generator, data: Any, images: int, seed: int, batch_size: int = 1024) -> ModelAtlas:
    """The atlas of one model on ``images`` held-out images (and as many samples)."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    atlas = ModelAtlas(gen.kind)
    colour = int(data.reference.shape[1]) == 3
    names = factor_names(colour)
    if colour:
        atlas.notes.append("colour images: measured on their luminance; length and thickness (stroke measures) "
                           "are left out of the factor scores, being meaningless for filled shapes")
    real_measures, real_labels, drawn = shared_parts(gen, data, atlas, images, seed, batch_size)
    if gen.vae is not None:
        vae_part(gen, data, atlas, real_measures, real_labels, names, seed, batch_size)
    elif gen.kind == "vae":
        atlas.skipped.append("no encoder: KL per dimension, active units, traversals of encoded images, MIG/DCI "
                             "of the latent means, the PCA map and the linear probe need the VAE's checkpoint")
    else:
        gan_part(gen, atlas, names, drawn, seed)
    atlas.seconds = time.perf_counter() - started
    return atlas


@torch.no_grad()
def encode(vae: torch.nn.Module, images: torch.Tensor, labels: np.ndarray | None, batch_size: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances (N, D) of ``images`` (a conditional VAE also reads the labels)."""
    mus, logvars = [], []
    lab = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        mu, logvar = vae.encode(x) if lab is None else vae.encode(x, lab[i:i + batch_size])
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus).numpy().astype(np.float64), torch.cat(logvars).numpy().astype(np.float64)


def vae_part(gen: Generator, data: Any, atlas: ModelAtlas, measures: dict[str, np.ndarray], labels: np.ndarray,
             names: tuple[str, ...], seed: int, batch_size: int) -> None:
    """The encoder's side: KL, active units, traversals, factor scores, the PCA map."""
    vae = gen.vae
    real = data.held_out[:len(labels)]
    mu, logvar = encode(vae, real, labels if gen.classes is not None else None, batch_size)
    kl = factors.kl_per_dimension(mu, logvar)
    active = factors.active_units(kl)
    atlas.scores["active_units"] = float(len(active))
    atlas.scores["latent_dim"] = float(gen.latent_dim)
    atlas.scores["kl_total_nats"] = float(kl.sum())
    atlas.directions = [{"dimension": int(d), "kl_nats": float(kl[d])} for d in np.argsort(-kl)]
    directions = latent_scores(mu, factor_table(measures, labels, names), names, seed, atlas)
    decoder = vae.decoder
    centre = traversal.typical_codes(mu, 1)
    centre_label = None if gen.classes is None else labels[centre]
    dims = (active if len(active) else np.argsort(-kl))[:MAX_ROWS]
    carried = {d: [n for n, c in atlas.carriers.items() if c["axis"] == d] for d in dims}
    axes = traversal.axis_directions(dims, gen.latent_dim)
    grid = decode_grid(decoder, traversal.traversal_latents(mu[centre], axes, traversal.spread_along(mu, axes),
                                                            STEPS, SPAN), centre_label)[0]
    atlas.figures.append(("vae_traversal_dimensions.png",
                          f"VAE: one row per {'active ' if len(active) else ''}dimension (most KL first), "
                          f"columns -{SPAN:g}..+{SPAN:g} sd around a typical held-out image",
                          grid_png(grid, [f"z{d} {','.join(carried[d][:2])}" for d in dims])))
    if directions is not None:
        atlas.figures.append(direction_grid(decoder, mu, labels, directions, names, gen.classes is not None))
    atlas.figures.append(("vae_pca_map.png", "VAE: encoded held-out images on their first two principal axes, "
                          "by class", pca_png(mu, labels, data.class_names or {}, "VAE latent means (PCA)")))


def direction_grid(decoder: Any, mu: np.ndarray, labels: np.ndarray, directions: factors.FactorDirections,
                   names: tuple[str, ...], conditional: bool) -> tuple[str, str, bytes]:
    """The three best-explained factors, each along its direction around three typical images of
    different classes (a factor should act alike on every class)."""
    top = np.argsort(-directions.r2)[:3]
    classes = [c for c in np.unique(labels)][:3]
    centres = np.stack([mu[labels == c][traversal.typical_codes(mu[labels == c], 1)[0]] for c in classes])
    rows, row_labels = [], []
    for k in top:
        u = directions.directions[[k]].astype(np.float32)
        lat = traversal.traversal_latents(centres, u, traversal.spread_along(mu, u), STEPS, SPAN)
        rows.append(decode_grid(decoder, lat, np.asarray(classes) if conditional else None)[:, 0])
        row_labels += [f"{names[k]} R2 {directions.r2[k]:.2f}"] + [""] * (len(centres) - 1)
    caption = ("VAE: the three factors a latent direction explains best (held-out R2), each around typical "
               "images of three classes, -3..+3 sd")
    return "vae_traversal_factors.png", caption, grid_png(np.concatenate(rows), row_labels)


def gan_part(gen: Generator, atlas: ModelAtlas, names: tuple[str, ...], drawn: Drawn, seed: int) -> None:
    """GANSpace directions, their traversal grid and factor scores of the samples' coordinates on them."""
    label0 = None if gen.classes is None else torch.full((1,), gen.classes[0], dtype=torch.long)
    features = gen.features or (lambda z: _run(gen.sampler, z, None if label0 is None else label0.expand(len(z))))
    dirs = factors.ganspace_directions(features, gen.latent_dim, components=min(MAX_ROWS, gen.latent_dim),
                                       samples=max(4 * gen.latent_dim, min(2048, 2 * len(drawn.z))), seed=seed)
    coords = drawn.z.double().numpy() @ dirs.directions.T.astype(np.float64)
    latent_scores(coords, factor_table(drawn.measures, drawn.labels, names), names, seed, atlas)
    centre = np.zeros((1, gen.latent_dim), dtype=np.float32)
    grid = decode_grid(gen.sampler, traversal.traversal_latents(centre, dirs.directions, dirs.sd, STEPS, SPAN),
                       None if gen.classes is None else np.asarray(gen.classes[:1]))[0]
    atlas.directions = direction_effects(grid, dirs, names)
    atlas.figures.append(("gan_traversal_directions.png",
                          f"GAN: one row per GANSpace direction (most variance first), columns -{SPAN:g}..+{SPAN:g} "
                          "sd from z = 0; the label says which measure moves most along it",
                          grid_png(grid, [f"d{i} {d['moves']}" for i, d in enumerate(atlas.directions)])))


def direction_effects(grid: np.ndarray, dirs: factors.Directions, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per direction: the measure whose value follows the step most closely (|correlation|), measured on
    the traversal's own images (R, S, C, H, W), and the direction itself (``vector``, a unit vector in z,
    and ``sd``, one slider step), which /explore's sliders move along."""
    steps = np.linspace(-SPAN, SPAN, grid.shape[1])
    effects = []
    for r in range(grid.shape[0]):
        measured = measure_images(grid[r])
        corr = {}
        for name in names:
            v = np.asarray(measured[name], dtype=np.float64)
            ok = np.isfinite(v)
            corr[name] = (float(np.corrcoef(steps[ok], v[ok])[0, 1])
                          if ok.sum() > 2 and np.ptp(v[ok]) > 0 else 0.0)
        best = max(corr, key=lambda n: abs(corr[n]))
        effects.append({"direction": r, "explained_variance": float(dirs.explained_variance_ratio[r]),
                        "moves": best if abs(corr[best]) >= 0.5 else "-", "correlation": corr,
                        # rounded: the PCA's last bits vary with the thread count, and the file must not
                        "vector": [round(float(v), 6) for v in dirs.directions[r]], "sd": round(float(dirs.sd[r]), 6)})
    return effects


def from_checkpoint(kind: str, checkpoint: Path) -> Generator:
    """The atlas's view of a genloop checkpoint: the sampler, and the VAE (encoder) or the GAN's first layer."""
    from genloop.io.checkpoints import load_classes, load_sampler, load_vae

    sampler, latent_dim = load_sampler(checkpoint)
    classes = load_classes(checkpoint)
    if kind == "vae":
        return Generator(kind, sampler, latent_dim, classes, vae=load_vae(checkpoint))
    inner = getattr(sampler, "generator", sampler)  # a conditional generator wraps the unconditional one
    return Generator(kind, sampler, latent_dim, classes, features=first_layer(inner))


def first_layer(generator: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """z -> the generator's first layers' output, whose principal components are the GANSpace directions.
    DP-MERF's generator reads [z, onehot(label)] there: every class weighted equally stands in for the label."""
    if isinstance(generator, MerfGenerator):
        neutral = generator.eye.mean(0, keepdim=True)
        return lambda z: generator.fc(torch.cat([z, neutral.expand(len(z), -1)], dim=1))
    return lambda z: generator.fc(z)
