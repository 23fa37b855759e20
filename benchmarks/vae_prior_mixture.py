"""Ex-post priors for a trained VAE (run on demand): the shipped fitted Gaussian against Gaussian mixtures.

Loads a project's trained VAE (``outputs/train/vae/model.pt``), draws one z from each training image's
posterior q(z | x) (the aggregate posterior), fits a full-covariance Gaussian mixture of K components
to them (scikit-learn; K = 1 is the single Gaussian the shipped ``prior: fitted_gaussian`` folds into
the exported decoder), samples as many images as evaluate does and scores them with the project's own
evaluation classifier (``genloop.evaluation.scoring.score_samples``: the loop's FID scale). Ghosh et
al. 2020 fit a 10-component mixture after training; a mixture does not fold into a z-only ONNX graph,
so it is worth shipping only if it gains a lot.

    python benchmarks/vae_prior_mixture.py --root PROJECT_MNIST --components 1 10 20
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import genloop  # noqa: F401 - before torch: sets OpenMP's wait policy as every genloop process has it
import torch

from genloop.config import load_params
from genloop.evaluation.scoring import score_samples
from genloop.io.checkpoints import load_sampler, load_vae
from genloop.io.datasets import load_split, to_tensor
from genloop.paths import ProjectPaths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="a project after train and evaluate (its classifier is reused)")
    parser.add_argument("--components", type=int, nargs="+", default=[1, 10, 20])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--grids", type=Path, help="write each prior's first 64 samples here as a PNG grid")
    args = parser.parse_args()
    from sklearn.mixture import GaussianMixture

    paths = ProjectPaths.at(args.root)
    params = load_params(paths.params)
    checkpoint = paths.train("vae") / "model.pt"
    vae = load_vae(checkpoint).eval()
    train = to_tensor(load_split(paths, "train")[0])
    n = len(load_split(paths, "val")[0]) + len(load_split(paths, "test")[0])
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        mu, logvar = vae.encode(train)
        posterior = (mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=gen)).numpy()
        shipped, latent = load_sampler(checkpoint)
        rows = {"shipped fitted_gaussian (in the checkpoint)":
                shipped(torch.randn(n, latent, generator=torch.Generator().manual_seed(args.seed + 1)))}
    for k in args.components:
        gmm = GaussianMixture(k, covariance_type="full", random_state=args.seed).fit(posterior)
        z = torch.from_numpy(gmm.sample(n)[0].astype(np.float32))[torch.randperm(n, generator=gen)]
        with torch.no_grad():
            rows[f"mixture of {k}, refitted after training"] = vae.decoder(z)
    for index, (name, samples) in enumerate(rows.items()):
        scores = score_samples(params, paths, samples.clamp(0, 1))
        if args.grids:
            from genloop.io.imaging import save_grid

            save_grid(samples[:64].clamp(0, 1).numpy(), args.grids / f"prior-{index}.png")
        print(json.dumps({"prior": name, **{key: round(float(scores[key]), 3) for key in
                                            ("fid", "fid_alt", "precision", "recall", "class_tvd", "recognisable_share",
                                                             "nn_train_distance_ratio", "train_copy_share")}}), flush=True)


if __name__ == "__main__":
    main()
