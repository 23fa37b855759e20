"""GAN configurations compared at equal training images: FID (genloop's classifier features) against
the real-vs-real floor, images/s, and a sample grid per configuration.

Needs a project prepared up to augment, e.g. for MNIST (first run collects, cleans and augments):

    genloop --root MNIST_PROJECT collect --source idx:../shared/data/mnist-t10k
    genloop --root MNIST_PROJECT clean --no-mlflow && genloop --root MNIST_PROJECT -S augment.copies=0 augment --no-mlflow
    python benchmarks/gan_sweep.py --root MNIST_PROJECT --images 150000 --eval-every 50000 \\
        --config base='{}' --config nodiffaug='{"diffaugment": []}' --config ttur='{"lr_d": 0.0004}'

Each ``--config NAME=JSON`` overrides ``train.gan`` keys of the project's params.yaml (code defaults
when it has none). Training goes through ``genloop.stages.train.fit_gan`` (the same ``run_epoch`` as
``genloop train``); samples are drawn as ``genloop train`` and ``genloop evaluate`` draw them (EMA
generator with re-estimated batch-norm statistics, as many samples as held-out images) and scored
with the FID of ``genloop evaluate`` (its classifier's features against the training split). Budgets are in images, so results do not depend on machine load;
wall times and images/s do (CPU seconds, process time, are steadier on a shared machine; with more
threads than free cores PyTorch's thread pool spins, so use --threads 1 on a loaded machine).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import genloop  # noqa: F401 - before torch: sets OpenMP's wait policy as every genloop process has it
import torch

from genloop.config import load_params
from genloop.core import quality
from genloop.evaluation.scoring import load_evaluation_data
from genloop.core.models.classifier import embed
from genloop.io.imaging import save_grid
from genloop.core.models.gan import recalibrate_batch_norm
from genloop.paths import ProjectPaths
from genloop.stages.train import epoch_plan, fit_gan, load_training_images, select_device
from genloop.io.datasets import load_split, to_tensor


@torch.no_grad()
def draw(trainer, latent_dim: int, n: int, seed: int) -> torch.Tensor:
    import copy

    sampler = copy.deepcopy(trainer.sampler)  # recalibration must not touch the generator still training
    if trainer.sampler_name == "generator_ema":
        recalibrate_batch_norm(sampler, latent_dim, seed)
    sampler.eval()
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    z = z.to(next(sampler.parameters()).device)
    return sampler(z).cpu()


def fid(evaluation, images: torch.Tensor, batch_size: int) -> float:
    """FID as ``genloop evaluate`` computes it (classifier features against the training split)."""
    return quality.fid(evaluation.reference_raw, embed(evaluation.classifier, images, batch_size)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--images", type=int, default=150_000, help="training images per configuration")
    parser.add_argument("--eval-every", type=int, default=0, help="also score at these multiples (0: only at the end)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu | cuda (equal-images quality comparisons only)")
    parser.add_argument("--config", action="append", default=[], metavar="NAME=JSON")
    parser.add_argument("--out", type=Path, default=Path("outputs/gan_sweep"))
    parser.add_argument("--jsonl", type=Path, default=None, help="append result rows here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    paths = ProjectPaths.at(args.root)
    base = load_params(paths.params)  # code defaults where the project has no params.yaml
    data = load_training_images(paths)
    val = to_tensor(load_split(paths, "val")[0])
    evaluation = load_evaluation_data(base, paths)
    floor = fid(evaluation, evaluation.held_out, base.evaluate.batch_size)
    n_samples = len(evaluation.held_out)
    args.out.mkdir(parents=True, exist_ok=True)
    configs = [c.split("=", 1) for c in args.config] or [["default", "{}"]]
    print(f"{len(data)} training images of {tuple(data.shape[2:])}; FID floor (real vs real) {floor:.2f}")
    for name, overrides in configs:
        cfg = base.train.gan.model_copy(update=json.loads(overrides))
        cfg = type(cfg).model_validate(cfg.model_dump())
        torch.manual_seed(base.seed)
        trainer = fit_gan(cfg, data, val, select_device(args.device), torch.Generator().manual_seed(base.seed))
        marks = set(range(args.eval_every, args.images, args.eval_every)) if args.eval_every else set()
        seen, trained_s, cpu_s = 0, 0.0, 0.0
        for images in epoch_plan(args.images, len(data)):
            # split an epoch at the scoring marks (the batch order is one permutation per epoch either way)
            started, cpu_started = time.perf_counter(), time.process_time()
            metrics = trainer.run_epoch(images)
            trained_s += time.perf_counter() - started
            cpu_s += time.process_time() - cpu_started
            seen += images
            due = [m for m in marks if m <= seen]
            if due or seen == args.images:
                marks -= set(due)
                fake = draw(trainer, cfg.latent_dim, n_samples, base.seed + 1)
                fake_fid = fid(evaluation, fake.clamp(0, 1), base.evaluate.batch_size)
                row = {"config": name, "overrides": overrides, "images": seen, "train_s": round(trained_s, 1),
                       "images_per_s": round(seen / trained_s),
                       "cpu_s": round(cpu_s, 1), "images_per_cpu_s": round(seen / cpu_s), "fid": round(fake_fid, 2), "floor": round(floor, 2),
                       "ratio": round(fake_fid / floor, 2), "d_loss": round(metrics["d_loss"], 3),
                       "g_loss": round(metrics["g_loss"], 3), "shape": list(data.shape[2:])}
                print(json.dumps(row), flush=True)
                if args.jsonl:
                    with args.jsonl.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                save_grid(fake[:64].numpy(), args.out / f"{name}-{seen}.png")


if __name__ == "__main__":
    main()
