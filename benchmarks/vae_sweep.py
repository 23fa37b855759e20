"""VAE quality at a fixed budget of training images (run on demand): FID and test negative ELBO.

Trains with ``genloop.stages.train.fit_vae`` on a prepared project (collect, clean, augment already run),
scores ``n`` samples (the held-out count, as evaluate does) with ``genloop.evaluation.scoring.score_samples``
and the test split's negative ELBO (nats/image) with ``genloop.core.models.vae.negative_elbo_nats``;
appends one JSON line per configuration to ``--results`` and writes a sample grid per run.
Both samplers are scored in one run: the plain decoder (z ~ N(0, I)) and, when the config fits one,
the fitted-prior sampler, so their FIDs come from the same weights.

    genloop --root DIGITS_PROJECT collect && genloop --root DIGITS_PROJECT clean && genloop --root DIGITS_PROJECT augment
    python benchmarks/vae_sweep.py --root DIGITS_PROJECT --images 150000 --tag base
    python benchmarks/vae_sweep.py --root DIGITS_PROJECT --images 150000 --tag fitted -S prior=fitted_gaussian -S latent_dim=8
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import genloop  # noqa: F401 - before torch: sets OpenMP's wait policy as every genloop process has it
import torch
import yaml

from genloop.io.datasets import load_split, to_tensor
from genloop.config import VAEConfig, load_params
from genloop.core.metric_names import FLOOR_SUFFIX
from genloop.evaluation.scoring import score_samples
from genloop.io.imaging import save_grid
from genloop.core.models.vae import LatentAffine, PriorDecoder, negative_elbo_nats
from genloop.paths import ProjectPaths
from genloop.stages.train import fit_vae, load_training_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="prepared genloop project (its params.yaml is used if present)")
    parser.add_argument("--images", type=int, required=True, help="training images to see (rounded up to whole epochs)")
    parser.add_argument("-S", "--set", action="append", default=[], help="train.vae override KEY=VALUE (YAML value)")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results", default="vae_sweep.jsonl")
    parser.add_argument("--grids", default="vae_sweep_grids")
    parser.add_argument("--skip-exact", action="store_true", help="score only the standard and trained fitted priors")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    paths = ProjectPaths.at(args.root)
    params = load_params(paths.params) if paths.params.exists() else load_params(Path(__file__).parents[1] / "params.yaml")
    params = params.model_copy(update={"train": params.train.model_copy(update={"threads": args.threads})})
    data = load_training_images(paths)
    val = to_tensor(load_split(paths, "val")[0])
    test = to_tensor(load_split(paths, "test")[0])
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    epochs = max(1, math.ceil(args.images / len(data)))
    cfg = VAEConfig(**{**params.train.vae.model_dump(), **overrides, "images": epochs * len(data)})

    torch.manual_seed(args.seed)
    trainer = fit_vae(cfg, data, val, torch.device("cpu"), torch.Generator().manual_seed(args.seed))
    started, cpu_started = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        metrics = trainer.run_epoch()
        if (epoch + 1) % max(1, epochs // 5) == 0:
            print(f"{args.tag}: epoch {epoch + 1}/{epochs} {time.perf_counter() - started:.0f}s "
                  f"val_loss {metrics['val_loss']:.2f}", flush=True)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    vae = trainer.state["vae"].eval()
    nelbo = negative_elbo_nats(vae, test)
    n = len(val) + len(load_split(paths, "test")[0])
    z = torch.randn(n, cfg.latent_dim, generator=torch.Generator().manual_seed(args.seed))
    samplers = {"standard": vae.decoder}
    if cfg.prior == "fitted_gaussian":
        samplers["fitted_gaussian"] = trainer.sampler.eval()
    if cfg.prior == "fitted_gaussian" and not args.skip_exact:
        with torch.no_grad():  # exact refits after training: posterior means alone, and with variances
            mu, logvar = vae.encode(data)
        for name, variances in (("exact_means", None), ("exact_aggregate", logvar.exp())):
            affine = LatentAffine(cfg.latent_dim)
            affine.fit(mu, variances)
            samplers[name] = PriorDecoder(affine, vae.decoder).eval()
    grids = Path(args.grids)
    grids.mkdir(parents=True, exist_ok=True)
    torch.save({name: m.state_dict() for name, m in trainer.saved.items()}, grids / f"{args.tag}.pt")
    for name, sampler in samplers.items():
        with torch.no_grad():
            samples = sampler(z).clamp(0, 1)
        scored = time.perf_counter()
        scores = score_samples(params, paths, samples)
        print(f"{args.tag}: scored {name} in {time.perf_counter() - scored:.0f}s", flush=True)
        save_grid(samples[:64].numpy(), grids / f"{args.tag}-{name}.png")
        row = {"tag": args.tag, "sampler": name, "shape": list(data.shape[2:]), "train_images": len(data),
               "epochs": epochs, "images_seen": epochs * len(data), "seconds": round(seconds, 1),
               "images_per_s": round(epochs * len(data) / seconds),
               "cpu_seconds": round(cpu_seconds, 1), "images_per_cpu_s": round(epochs * len(data) / cpu_seconds), "fid": round(scores["fid"], 2),
               "fid_floor": round(scores["fid" + FLOOR_SUFFIX], 2), "test_nelbo": round(nelbo, 2),
               "val_loss": round(metrics["val_loss"], 2), "train_kl": round(metrics["train_kl"], 2),
               "config": {k: v for k, v in cfg.model_dump().items() if k != "epochs"}}
        print(json.dumps(row))
        with open(args.results, "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
