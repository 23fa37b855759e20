"""Latent traversals (what changes when one dimension or direction moves) and attribution (which
training images a sample is closest to): arrays ready to decode or show, no model inside.

A VAE's traversals live in the space its *decoder* reads (the posterior means), not behind a fitted
prior's affine map: decode them with ``vae.decoder``, not with the exported sampler. A GAN's live in
its z-space, with the ``Directions`` of ``genloop.core.factors.ganspace_directions``.
"""
from __future__ import annotations

import numpy as np
import torch


def axis_directions(dims: np.ndarray | list[int], latent_dim: int) -> np.ndarray:
    """Unit vectors (R, latent_dim) along the given latent dimensions."""
    idx = np.asarray(dims, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= latent_dim):
        raise ValueError(f"dimensions {idx.tolist()} outside 0..{latent_dim - 1}")
    out = np.zeros((len(idx), latent_dim), dtype=np.float32)
    out[np.arange(len(idx)), idx] = 1.0
    return out


def spread_along(codes: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Standard deviation of the codes (N, D) projected on each unit direction (R, D): the traversal's
    unit step, so ±3 covers where the encoded data actually lie along it."""
    return (np.asarray(codes, dtype=np.float64) @ np.asarray(directions, dtype=np.float64).T).std(axis=0)


def traversal_latents(centres: np.ndarray, directions: np.ndarray, sd: np.ndarray, steps: int = 7,
                      span: float = 3.0) -> np.ndarray:
    """Latents to decode, (M, R, steps, D): for each centre (M, D) (e.g. encoded real images) and each
    direction r, the centre moved to offsets linspace(-span, span, steps) x sd[r] along it. The centre's
    own coordinate along the direction is replaced (not added to), so column j always means the same
    value of that dimension whichever image it started from."""
    c = np.asarray(centres, dtype=np.float32)
    u = np.asarray(directions, dtype=np.float32)
    s = np.asarray(sd, dtype=np.float32)
    if c.ndim != 2 or u.ndim != 2 or c.shape[1] != u.shape[1] or len(s) != len(u):
        raise ValueError(f"centres {c.shape}, directions {u.shape} and sd {s.shape} do not fit together")
    if steps < 2:
        raise ValueError(f"a traversal needs at least two steps, got {steps}")
    offsets = np.linspace(-span, span, steps, dtype=np.float32)                    # (S,)
    along = c @ u.T                                                                 # (M, R)
    base = c[:, None, :] - along[:, :, None] * u[None, :, :]                        # centre minus its own coordinate
    return base[:, :, None, :] + (offsets[None, None, :, None] * s[None, :, None, None]) * u[None, :, None, :]


def typical_codes(codes: np.ndarray, count: int = 1, seed: int = 0) -> np.ndarray:
    """Indices of ``count`` encoded images nearest the codes' median (one typical image first), for
    traversals centred on real images rather than on the (possibly blurry) mean code."""
    z = np.asarray(codes, dtype=np.float64)
    dist = np.linalg.norm((z - np.median(z, axis=0)) / np.where(z.std(0) > 0, z.std(0), 1.0), axis=1)
    return np.argsort(dist, kind="stable")[:count]


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, reference: torch.Tensor, k: int = 5,
                       block_rows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Indices (M, k) and Euclidean distances (M, k) of each query's ``k`` nearest reference rows, in
    blocks of queries so memory stays at block_rows x len(reference). With the evaluation classifier's
    (normalised) features as rows, these are the training images a sample is "made of" (attribution)."""
    q, r = queries.float().flatten(1), reference.float().flatten(1)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} features, the reference {r.shape[1]}")
    k = min(k, len(r))
    idx, dist = [], []
    for block in q.split(block_rows):
        d = torch.cdist(block, r)
        values, indices = d.topk(k, dim=1, largest=False)
        idx.append(indices)
        dist.append(values)
    return torch.cat(idx).numpy(), torch.cat(dist).numpy()


def attribution_rows(samples: np.ndarray, training: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Images (M, 1 + k, ...) to show side by side: each sample followed by its nearest training images."""
    s, t = np.asarray(samples), np.asarray(training)
    return np.concatenate([s[:, None], t[np.asarray(indices)]], axis=1)
