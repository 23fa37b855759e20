"""What a generator's latent space carries, scored against measured factors of the images (morphometrics,
labels): the scores of the disentanglement literature, written in numpy/scikit-learn so they run on any
data set that has measurable factors, not only on the synthetic ones with known ground truth.

- ``distribution_gaps`` / ``gap_sentence``: real vs generated distributions per measure and class
  (Wasserstein-1, Kolmogorov-Smirnov, relative difference of means), and one sentence a person can act
  on ("generated 7s are 12% thicker than real 7s").
- ``mig``: mutual-information gap (Chen et al. 2018).
- ``dci``: disentanglement, completeness, informativeness (Eastwood & Williams 2018).
- ``kl_per_dimension`` / ``active_units``: which VAE dimensions the posterior uses at all.
- ``ganspace_directions``: principal directions of a generator (Härkönen et al. 2020), in z-space.
- ``linear_probe_accuracy``, ``pca_map``: how linearly the class sits in the latent means; a 2-D map.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

# (word when generated > real, word when generated < real) for relative differences of means; slant
# is an angle around 0, so it gets an absolute difference in degrees instead.
_COMPARATIVES = {
    "area": ("larger", "smaller"), "length": ("longer-stroked", "shorter-stroked"),
    "thickness": ("thicker", "thinner"), "width": ("wider", "narrower"), "height": ("taller", "shorter"),
}


@dataclass(frozen=True)
class Gap:
    """One measure's real vs generated comparison, over one class (``label``) or all images (None)."""

    measure: str
    label: int | None
    n_real: int
    n_generated: int
    mean_real: float
    mean_generated: float
    relative_difference: float   # (mean_generated - mean_real) / |mean_real|
    wasserstein: float           # W1 in the measure's units
    wasserstein_sd: float        # W1 / the real values' standard deviation (comparable across measures)
    ks: float                    # Kolmogorov-Smirnov statistic (0: same distribution, 1: disjoint)
    ks_pvalue: float


def _gap(name: str, label: int | None, real: np.ndarray, gen: np.ndarray) -> Gap | None:
    from scipy.stats import ks_2samp, wasserstein_distance

    real, gen = real[np.isfinite(real)], gen[np.isfinite(gen)]
    if len(real) < 2 or len(gen) < 2:
        return None
    mr, mg, sd = float(real.mean()), float(gen.mean()), float(real.std())
    w1 = float(wasserstein_distance(real, gen))
    ks = ks_2samp(real, gen)
    rel = (mg - mr) / abs(mr) if mr != 0 else math.nan
    return Gap(name, label, len(real), len(gen), mr, mg, rel, w1, w1 / sd if sd > 0 else math.nan,
               float(ks.statistic), float(ks.pvalue))


def distribution_gaps(real: dict[str, np.ndarray], generated: dict[str, np.ndarray],
                      real_labels: np.ndarray | None = None, generated_labels: np.ndarray | None = None,
                      min_count: int = 20) -> list[Gap]:
    """Every measure compared over all images, then per class where both sides have labels (a
    conditional model's requested labels, or the evaluation classifier's predictions) and at least
    ``min_count`` images of that class."""
    gaps = [_gap(k, None, np.asarray(real[k], float), np.asarray(generated[k], float)) for k in real if k in generated]
    if real_labels is not None and generated_labels is not None:
        rl, gl = np.asarray(real_labels), np.asarray(generated_labels)
        for c in np.intersect1d(np.unique(rl), np.unique(gl)):
            r_in, g_in = rl == c, gl == c
            if r_in.sum() < min_count or g_in.sum() < min_count:
                continue
            gaps += [_gap(k, int(c), np.asarray(real[k], float)[r_in], np.asarray(generated[k], float)[g_in])
                     for k in real if k in generated]
    return [g for g in gaps if g is not None]


def gap_sentence(gap: Gap, class_names: Sequence[str] | None = None) -> str:
    """"generated 7s are 12% thicker than real 7s" (slant: "generated 7s lean 4.1° further right than
    real 7s"). ``class_names[label]`` replaces the default "<label>s"."""
    if gap.label is None:
        noun = "images"
    else:
        noun = class_names[gap.label] if class_names is not None else f"{gap.label}s"
    if gap.measure == "slant":
        deg = math.degrees(gap.mean_generated - gap.mean_real)
        side = "right" if deg >= 0 else "left"
        return f"generated {noun} lean {abs(deg):.1f}° further {side} than real {noun}"
    more, less = _COMPARATIVES.get(gap.measure, (f"higher in {gap.measure}", f"lower in {gap.measure}"))
    if not math.isfinite(gap.relative_difference):
        return f"generated {noun}: {gap.measure} {gap.mean_generated:.3g} against {gap.mean_real:.3g} for real {noun}"
    word = more if gap.relative_difference >= 0 else less
    return f"generated {noun} are {abs(gap.relative_difference):.0%} {word} than real {noun}"


def discretise(values: np.ndarray, bins: int = 20) -> np.ndarray:
    """Equal-frequency bin indices per column of (N, K) values (a column with few distinct values, such
    as a label, keeps them as its codes). Quantile edges, unlike disentanglement_lib's equal-width
    histogram, are not stretched by a few outlying latents."""
    x = np.asarray(values, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    out = np.zeros(x.shape, dtype=np.int64)
    for j in range(x.shape[1]):
        col = x[:, j]
        uniq = np.unique(col)
        if len(uniq) <= bins:
            out[:, j] = np.searchsorted(uniq, col)
        else:
            edges = np.unique(np.quantile(col, np.linspace(0, 1, bins + 1)[1:-1]))
            out[:, j] = np.searchsorted(edges, col, side="right")
    return out


def _mi_pair(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information in nats of two non-negative integer code arrays, from their contingency table."""
    nb = int(b.max()) + 1
    joint = np.bincount(a * nb + b, minlength=(int(a.max()) + 1) * nb).reshape(-1, nb) / len(a)
    pa, pb = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(max((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum(), 0.0))


def mutual_information(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(D, K) mutual information in nats between each discretised code column and each factor column."""
    return np.array([[_mi_pair(codes[:, i], factors[:, j]) for j in range(factors.shape[1])]
                     for i in range(codes.shape[1])])


@dataclass(frozen=True)
class MIGResult:
    """``per_factor[k]``: (top MI - second MI) / H(factor k); ``top_dimension[k]``: the latent carrying it."""

    score: float
    per_factor: np.ndarray
    top_dimension: np.ndarray
    mutual_information: np.ndarray   # (D, K) nats
    entropy: np.ndarray              # (K,) nats


def mig(latents: np.ndarray, factors: np.ndarray, bins: int = 20) -> MIGResult:
    """Mutual-information gap (Chen et al. 2018): for each factor, the gap between the two latent
    dimensions that know most about it, normalised by its entropy; 1 when one dimension alone encodes
    it, near 0 when it is spread over several (or none). Continuous factors are discretised like the
    latents; ``score`` averages the factors."""
    z, f = discretise(latents, bins), discretise(factors, bins)
    if z.shape[0] != f.shape[0]:
        raise ValueError(f"{z.shape[0]} latent rows against {f.shape[0]} factor rows")
    mi = mutual_information(z, f)
    entropy = np.array([mutual_information(f[:, [j]], f[:, [j]])[0, 0] for j in range(f.shape[1])])
    ordered = np.sort(mi, axis=0)[::-1]
    second = ordered[1] if len(ordered) > 1 else np.zeros(f.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(entropy > 0, (ordered[0] - second) / entropy, 0.0)
    return MIGResult(float(per.mean()), per, mi.argmax(axis=0), mi, entropy)


@dataclass(frozen=True)
class DCIResult:
    disentanglement: float
    completeness: float
    informativeness: float           # mean held-out R² (continuous factors) / accuracy (discrete ones)
    importance: np.ndarray           # (D, K): how much latent d serves to predict factor k
    per_factor_informativeness: np.ndarray


def _entropy_base(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=axis) / math.log(base) if base > 1 else np.zeros(p.shape[1 - axis])


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """Disentanglement and completeness of a (D, K) importance matrix (Eastwood & Williams 2018): one
    minus the entropy of each latent's importances over factors (base K), weighted by the latent's share
    of importance; and of each factor's importances over latents (base D), weighted likewise."""
    r = np.abs(np.asarray(importance, dtype=np.float64))
    total = r.sum()
    if total <= 0:
        return 0.0, 0.0
    d_count, k_count = r.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        p_code = np.nan_to_num(r / r.sum(axis=1, keepdims=True))
        p_factor = np.nan_to_num(r / r.sum(axis=0, keepdims=True))
    disent = 1.0 - _entropy_base(p_code, k_count, axis=1)
    complete = 1.0 - _entropy_base(p_factor, d_count, axis=0)
    return float((disent * r.sum(axis=1) / total).sum()), float((complete * r.sum(axis=0) / total).sum())


def _fit_importance(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray,
                    discrete: bool, method: str, seed: int) -> tuple[np.ndarray, float]:
    """One factor's importance per latent and held-out score, from a linear model on standardised
    latents (|coefficients|) or a random forest (impurity importances)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, RidgeCV

    if method == "forest":
        cls = RandomForestClassifier if discrete else RandomForestRegressor
        model = cls(n_estimators=30, max_depth=8, min_samples_leaf=5, random_state=seed, n_jobs=1).fit(x_tr, y_tr)
        return model.feature_importances_, float(model.score(x_te, y_te))
    if method != "linear":
        raise ValueError(f"DCI method must be 'linear' or 'forest', got {method!r}")
    if discrete:
        model = LogisticRegression(max_iter=500).fit(x_tr, y_tr)
        return np.abs(model.coef_).mean(axis=0), float(model.score(x_te, y_te))
    y_sd = y_tr.std() or 1.0
    model = RidgeCV(alphas=(1e-3, 1e-2, 1e-1, 1.0, 10.0)).fit(x_tr, (y_tr - y_tr.mean()) / y_sd)
    return np.abs(model.coef_), float(model.score(x_te, (y_te - y_tr.mean()) / y_sd))


def dci(latents: np.ndarray, factors: np.ndarray, discrete: Sequence[bool] | None = None,
        method: str = "linear", test_fraction: float = 0.3, seed: int = 0) -> DCIResult:
    """DCI scores of latents (N, D) against factors (N, K): a model per factor predicts it from the
    standardised latents on a training share; its importances form the matrix, its held-out score
    the informativeness. ``discrete[k]`` marks class-like factors (default: integer columns with at
    most 20 values). ``linear`` is fast and reads as "which dimensions this factor moves along";
    ``forest`` also credits non-linear use (and costs seconds)."""
    z = np.asarray(latents, dtype=np.float64)
    f = np.asarray(factors, dtype=np.float64)
    f = f[:, None] if f.ndim == 1 else f
    keep = np.isfinite(f).all(axis=1) & np.isfinite(z).all(axis=1)
    z, f = z[keep], f[keep]
    z = (z - z.mean(0)) / np.where(z.std(0) > 0, z.std(0), 1.0)
    if discrete is None:
        discrete = [bool(np.all(f[:, k] == np.round(f[:, k])) and len(np.unique(f[:, k])) <= 20) for k in range(f.shape[1])]
    order = np.random.default_rng(seed).permutation(len(z))
    cut = int(len(z) * (1 - test_fraction))
    tr, te = order[:cut], order[cut:]
    importance, scores = np.zeros((z.shape[1], f.shape[1])), np.zeros(f.shape[1])
    for k in range(f.shape[1]):
        y = f[:, k].astype(np.int64) if discrete[k] else f[:, k]
        importance[:, k], scores[k] = _fit_importance(z[tr], y[tr], z[te], y[te], discrete[k], method, seed)
    d, c = dci_from_importance(importance)
    return DCIResult(d, c, float(np.clip(scores, 0, 1).mean()), importance, scores)


@dataclass(frozen=True)
class FactorDirections:
    """For each factor, the unit direction (K, D) in latent space along which it grows fastest (least
    squares), how much of it that line explains (held-out R², (K,)), and the latent sd along it."""

    directions: np.ndarray
    r2: np.ndarray
    sd: np.ndarray


def factor_directions(latents: np.ndarray, factors: np.ndarray, test_fraction: float = 0.3,
                      seed: int = 0) -> FactorDirections:
    """The direction carrying each factor even when no single dimension does (a VAE's axes are only
    identified up to rotation at small β, so MIG per axis can be near 0 while a factor is linear in the
    latents). R² is the held-out fit of the least-squares regression of the factor on the latents. The
    direction is that regression's pattern, Cov(z) w (Haufe et al. 2014), not its weights w: where the
    latents move as the factor does. The weights alone lean on any near-constant dimension that happens
    to predict the factor (a β-VAE's inactive units: huge weights, no spread, ignored by the decoder),
    and a traversal along them shows nothing."""
    z = np.asarray(latents, dtype=np.float64)
    f = np.asarray(factors, dtype=np.float64)
    f = f[:, None] if f.ndim == 1 else f
    keep = np.isfinite(f).all(axis=1) & np.isfinite(z).all(axis=1)
    z, f = z[keep], f[keep]
    order = np.random.default_rng(seed).permutation(len(z))
    cut = int(len(z) * (1 - test_fraction))
    tr, te = order[:cut], order[cut:]
    if cut < z.shape[1] + 2 or len(te) < 2:
        raise ValueError(f"{len(z)} complete rows are too few to fit {z.shape[1]} latent dimensions")
    x_tr = np.column_stack([z[tr], np.ones(len(tr))])
    coef = np.linalg.lstsq(x_tr, f[tr], rcond=None)[0]                       # (D + 1, K)
    pred = np.column_stack([z[te], np.ones(len(te))]) @ coef
    resid = ((f[te] - pred) ** 2).sum(0)
    total = ((f[te] - f[te].mean(0)) ** 2).sum(0)
    r2 = np.where(total > 0, 1 - resid / np.where(total > 0, total, 1), 0.0)
    w = coef[:-1].T                                                           # (K, D)
    pattern = w @ np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1])      # (K, D): Cov(z) w per factor
    u = pattern / np.maximum(np.linalg.norm(pattern, axis=1, keepdims=True), 1e-12)
    return FactorDirections(u, r2, (z @ u.T).std(0))


def kl_per_dimension(mu: np.ndarray | torch.Tensor, logvar: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mean over images of KL(q(z_d | x) || N(0, 1)) per latent dimension, in nats (D,)."""
    m, lv = np.asarray(mu, dtype=np.float64), np.asarray(logvar, dtype=np.float64)
    return (0.5 * (m * m + np.exp(lv) - 1.0 - lv)).mean(axis=0)


def active_units(kl: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Indices of the dimensions whose mean KL exceeds ``threshold`` nats, most informative first:
    the rest carry (next to) nothing and their traversals change nothing. (Burda et al. 2016 use the
    variance of the posterior means over the data instead; both pick the same dimensions in practice.)"""
    k = np.asarray(kl, dtype=np.float64)
    idx = np.flatnonzero(k > threshold)
    return idx[np.argsort(-k[idx], kind="stable")]


@dataclass(frozen=True)
class Directions:
    """Unit directions (R, latent_dim) in z-space, the sd of z projected on each (traversal step), and
    the share of feature variance each principal component explains."""

    directions: np.ndarray
    sd: np.ndarray
    explained_variance_ratio: np.ndarray


@torch.no_grad()
def ganspace_directions(features: Callable[[torch.Tensor], torch.Tensor], latent_dim: int, components: int = 8,
                        samples: int = 4096, seed: int = 0, batch_size: int = 512) -> Directions:
    """GANSpace (Härkönen et al. 2020): PCA of an early feature map of the generator over z ~ N(0, I),
    carried back to z-space by least squares (their BigGAN recipe): the direction u_k with z ≈ Σ x_k u_k,
    x_k the samples' coordinates on principal component k. ``features``: z (B, latent_dim) -> any tensor
    (B, ...), e.g. ``lambda z: generator.fc(z)``; call it in eval mode (batch norm's running stats)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, latent_dim, generator=gen)
    y = torch.cat([features(b).reshape(len(b), -1).double() for b in z.split(batch_size)])
    y = y - y.mean(0)
    k = min(components, *y.shape)
    vt = _top_right_singular_vectors(y, k, seed)
    coords = y @ vt.T                                           # (N, k)
    u = torch.linalg.lstsq(coords, z.double()).solution        # (k, latent_dim): z ≈ coords @ u
    u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sd = (z.double() @ u.T).std(0)
    return Directions(u.float().numpy(), sd.numpy(), (coords.pow(2).sum(0) / y.pow(2).sum()).numpy())


def _top_right_singular_vectors(y: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """The first ``k`` principal axes (k, F) of centred rows ``y``. A wide feature map (a DCGAN's first layer
    on MNIST: 2,048 x 6,272) takes a minute as a full SVD; a randomised one (Halko et al. 2011, a few
    power iterations, seeded) finds the few leading axes in a fraction of a second."""
    if min(y.shape) <= 4 * (k + 8):
        return torch.linalg.svd(y, full_matrices=False)[2][:k]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.svd_lowrank(y, q=k + 8, niter=6)
    return v.T[:k]


def linear_probe_accuracy(latents: np.ndarray, labels: np.ndarray, test_fraction: float = 0.3, seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression predicting the class from standardised latent means:
    how linearly separable the classes are in the latent space (chance is the largest class's share)."""
    from sklearn.linear_model import LogisticRegression

    z = np.asarray(latents, dtype=np.float64)
    z = (z - z.mean(0)) / np.where(z.std(0) > 0, z.std(0), 1.0)
    y = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(z))
    cut = int(len(z) * (1 - test_fraction))
    if cut < 2 or cut >= len(z) or len(np.unique(y[order[:cut]])) < 2:
        raise ValueError(f"a probe needs at least two classes and a non-empty held-out share (got {len(z)} rows)")
    model = LogisticRegression(max_iter=1000).fit(z[order[:cut]], y[order[:cut]])
    return float(model.score(z[order[cut:]], y[order[cut:]]))


def pca_map(latents: np.ndarray, components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The latents' coordinates on their first ``components`` principal axes (N, components) and the
    variance share of each: the 2-D map of the encoded images."""
    z = np.asarray(latents, dtype=np.float64)
    z = z - z.mean(0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    var = s ** 2
    return z @ vt[:components].T, var[:components] / var.sum()
