"""What differential privacy costs: ε against sample quality, a membership attack and speed.

One model (the MLP VAE by default; ``--model gan`` for the DCGAN with a private discriminator) is
trained on ``--train`` images of the MNIST test set (a seeded random split; the rest are held out), without privacy and with DP-SGD at
several noise multipliers, all on the same images budget (``--images``), through
``genloop.stages.train.fit_vae``/``fit_gan`` as the pipeline trains them. Each arm then reports:

- ε at δ (``--delta``) from the RDP accountant (Poisson sampling, as the private arms train);
- FID of as many samples as held-out images against the training images, in the feature space of
  genloop's evaluation classifier (the CNN of genloop.core.models.classifier, trained once on the
  training images with the evaluate defaults), and the real-vs-real floor (held-out vs training);
- a membership-inference AUC: the simple nearest-generated-sample distance attack (an image is
  called a member when a sample lies close to it; Hilprecht et al. 2019), training images against
  the held-out ones; 0.5 means the samples reveal nothing about who was in the training set;
- training throughput (images/s) and its ratio to the non-private arm.

The VAE arms all sample with prior: standard (a private VAE cannot use the fitted prior, which
fits the training latents outside DP-SGD); ``--fitted-reference`` adds the non-private VAE with the
shipped fitted prior as a reference row.

    PYTHONPATH=src python benchmarks/dp_tradeoff.py                       # ~10 min on one loaded core
    PYTHONPATH=src python benchmarks/dp_tradeoff.py --device cuda --images 2000000
    PYTHONPATH=src python benchmarks/dp_tradeoff.py --model gan --images 50000 --noise 0.8 1.5
    PYTHONPATH=src python benchmarks/dp_tradeoff.py --tiny                # seconds: a smoke run

Needs only torch, numpy, scipy, opacus, pydantic, pyyaml and genloop (no MLflow, Prefect, DVC,
torchmetrics); run from the repository root with ``PYTHONPATH=src``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import genloop  # noqa: F401 - before torch: sets OpenMP's wait policy as every genloop process has it
import torch
from scipy import linalg

from genloop.config import EvaluateConfig, GANConfig, VAEConfig
from genloop.io.datasets import to_tensor
from genloop.io.idx import read_idx_folder
from genloop.core.models.classifier import embed, train_classifier
from genloop.core.models.gan import recalibrate_batch_norm
from genloop.stages.train import epoch_plan, fit_gan, fit_vae

REPO_ROOT = Path(__file__).resolve().parents[1]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between Gaussians fitted to two feature sets, in float64 (what torchmetrics computes)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


def nearest_distances(images: torch.Tensor, samples: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """RMS pixel distance of each image to its nearest sample."""
    flat_s = samples.flatten(1)
    out = []
    for block in images.flatten(1).split(chunk):
        out.append(torch.cdist(block, flat_s).min(1).values)
    return torch.cat(out) / math.sqrt(flat_s.shape[1])


def auc(member_scores: torch.Tensor, other_scores: torch.Tensor) -> float:
    """P(a member scores higher than a non-member), ties half (Mann-Whitney U / (n m))."""
    from scipy.stats import rankdata

    scores = torch.cat([member_scores, other_scores]).numpy()
    ranks = rankdata(scores)
    n, m = len(member_scores), len(other_scores)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * m))


def train_arm(model: str, noise: float | None, args, data: torch.Tensor, val: torch.Tensor,
              device: torch.device) -> tuple[torch.nn.Module, float, dict]:
    private = isinstance(noise, float)
    privacy = {"enabled": private, "noise_multiplier": noise if private else 1.0, "delta": args.delta,
               "max_grad_norm": args.max_grad_norm}
    if model == "vae":
        cfg = VAEConfig(arch="mlp", images=args.images, batch_size=args.batch_size, latent_dim=args.latent_dim,
                        beta=args.beta, prior="fitted_gaussian" if noise == "fitted" else "standard",
                        privacy=privacy)
        fit = fit_vae
    else:
        cfg = GANConfig(images=args.images, batch_size=args.batch_size, augmented=False, privacy=privacy)
        fit = fit_gan
    torch.manual_seed(args.seed)
    trainer = fit(cfg, data, val, device, torch.Generator().manual_seed(args.seed))
    started, last = time.perf_counter(), {}
    for images in epoch_plan(cfg.images, len(data)):
        last = trainer.run_epoch(images)
    seconds = time.perf_counter() - started
    if trainer.sampler_name == "generator_ema":
        recalibrate_batch_norm(trainer.sampler, cfg.latent_dim, args.seed)
    summary = trainer.privacy.summary() if trainer.privacy is not None else {}
    return trainer.sampler.eval(), cfg.images / seconds, {**summary, "last_epoch": last, "latent_dim": cfg.latent_dim}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data" / "mnist-t10k"),
                        help="IDX folder (default ../shared/data/mnist-t10k)")
    parser.add_argument("--model", choices=("vae", "gan"), default="vae")
    parser.add_argument("--images", type=int, default=100_000,
                        help="training images each arm sees (100k: 12.5 epochs of 8,000)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.6, 1.0, 2.0], help="noise multipliers")
    parser.add_argument("--train", type=int, default=8000, help="first N images train, the rest are held out")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--latent-dim", type=int, default=20, help="VAE latent size (20: pytorch/examples on MNIST)")
    parser.add_argument("--beta", type=float, default=1.0, help="VAE KL weight")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--fitted-reference", action="store_true", help="VAE: add the non-private fitted-prior row")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--tiny", action="store_true", help="smoke run: 2,000 images, 1,500 of them training")
    args = parser.parse_args()
    if args.tiny:
        args.images, args.train = 2000, 1500
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    raw, labels = read_idx_folder(Path(args.data))
    # A seeded random split: the t10k file lists its two writer populations in blocks (the cleaner
    # first), so a split by position would give members and non-members different handwriting and
    # the attack an AUC above 0.5 with no memorisation at all.
    order = torch.randperm(len(raw), generator=torch.Generator().manual_seed(args.seed))
    images, labels = to_tensor(raw)[order], labels[order.numpy()]
    if args.tiny:
        images, labels = images[:2000], labels[:2000]
    train, held_out = images[:args.train], images[args.train:]
    train_labels = torch.from_numpy(labels[:args.train].astype(np.int64))
    evaluation = EvaluateConfig()
    started = time.perf_counter()
    classifier = train_classifier(train, train_labels, evaluation.feature_dim, int(labels.max()) + 1,
                                  evaluation.classifier_epochs if not args.tiny else 2, args.seed)
    reference = embed(classifier, train)[0].double().numpy()
    floor = frechet_distance(reference, embed(classifier, held_out)[0].double().numpy())
    classifier_s = time.perf_counter() - started
    members = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:len(held_out)]]

    arms: list[tuple[str, object]] = [("non-private", None)]
    if args.model == "vae" and args.fitted_reference:
        arms.append(("non-private, fitted prior", "fitted"))
    arms += [(f"DP σ={noise:g}", noise) for noise in args.noise]
    rows = []
    for label, noise in arms:
        sampler, speed, info = train_arm(args.model, noise, args, train, held_out[:500], device)
        with torch.no_grad():
            z = torch.randn(len(held_out), info["latent_dim"], generator=torch.Generator().manual_seed(args.seed + 1))
            samples = sampler(z.to(device)).clamp(0, 1).cpu()
        fid = frechet_distance(reference, embed(classifier, samples)[0].double().numpy())
        attack = auc(-nearest_distances(members, samples), -nearest_distances(held_out, samples))
        rows.append({"arm": label, "noise_multiplier": noise if isinstance(noise, float) else None,
                     "epsilon": info.get("epsilon"), "fid": fid, "membership_auc": attack,
                     "images_per_s": speed, "steps": info.get("steps")})
        print(f"{label}: ε={info.get('epsilon', math.inf):.3g} FID={fid:.1f} AUC={attack:.3f} {speed:,.0f} img/s",
              flush=True)
    base = rows[0]["images_per_s"]
    print(f"\n{args.model.upper()} on {len(train):,} MNIST t10k images (held out {len(held_out):,}), "
          f"{args.images:,} images per arm, batch {args.batch_size}, δ = {args.delta:g}, clip {args.max_grad_norm:g}, "
          f"{args.threads} thread(s) on {args.device} ({platform.processor() or platform.machine()}); "
          f"real-vs-real FID floor {floor:.2f}; classifier {classifier_s:.0f} s\n")
    print("| arm | σ | ε (δ = %g) | FID | membership AUC | images/s | speed vs non-private |" % args.delta)
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        eps = "∞" if row["epsilon"] is None else f"{row['epsilon']:.3g}"
        sigma = "–" if row["noise_multiplier"] is None else f"{row['noise_multiplier']:g}"
        print(f"| {row['arm']} | {sigma} | {eps} | {row['fid']:.1f} | {row['membership_auc']:.3f} | "
              f"{row['images_per_s']:,.0f} | {row['images_per_s'] / base:.2f}x |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "floor_fid": floor,
                                        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
