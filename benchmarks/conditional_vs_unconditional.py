"""Conditional against unconditional GAN on MNIST at the same images budget: FID, label fidelity, the floors.

Both arms train through ``genloop.stages.train.fit_gan`` with the shipped ``params.yaml`` (train.gan, augmented
copies included when it says so), on the first ``--train-images`` images of the MNIST test set, for
``--images`` training images each; the conditional arm sets ``conditional: true`` and trains with the
labels. Scoring uses the evaluate stage's main feature network (genloop's ``DigitClassifier``, the
``cnn`` arch, trained on the same training images with evaluate's settings):

- FID of as many samples as there are held-out images (the conditional arm's labels drawn from the
  training labels) against the training images, on raw penultimate features, as evaluate computes it;
  its floor is the held-out real images' FID;
- label fidelity: as many samples per class as held-out images / classes, the share the classifier puts
  in the asked class, per class and the mean; its floor is the classifier's per-class held-out accuracy;
- ratio = FID(conditional) / FID(unconditional). Goals: label fidelity >= 0.9, ratio <= 1.2.

Writes JSON to stdout and OUT/results.json, and sample grids OUT/grid_unconditional.png and
OUT/grid_conditional_per_class.png (one labelled row per class). Needs only torch, numpy,
pydantic, pyyaml and genloop (Pillow for the PNGs, else .npy): no MLflow, Prefect or DVC, so it runs on
a bare GPU machine. From the repository root:

    PYTHONPATH=src python benchmarks/conditional_vs_unconditional.py --device cuda --out OUT
    PYTHONPATH=src python benchmarks/conditional_vs_unconditional.py --images 60000 --device cpu --out OUT
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import genloop  # noqa: F401 - before torch: sets OpenMP's wait policy as every genloop process has it
import torch

from genloop.config import load_params
from genloop.evaluation.scoring import class_count
from genloop.io.datasets import to_tensor
from genloop.io.idx import read_idx_folder
from genloop.core.label_fidelity import (conditional_samples, draw_labels, label_fidelity, per_class_labels,
                                    trained_classes)
from genloop.core.models.classifier import embed, train_classifier
from genloop.core.models.conditional import WithDrawnLabels
from genloop.core.models.gan import recalibrate_batch_norm
from genloop.stages.train import Labels, epoch_plan, fit_gan, select_device

REPO_ROOT = Path(__file__).resolve().parents[1]


def frechet_distance(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """FID between Gaussians fitted to two feature sets (N, d), in float64, as torchmetrics (and so
    genloop.core.quality.fid) computes it: tr sqrt(S1 S2) as the sum of the square roots of its eigenvalues."""
    a, b = reference.double().numpy(), candidate.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    trace_sqrt = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).astype(complex)).real.sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def train_arm(params, images: np.ndarray, labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray,
              budget: int, conditional: bool, device: torch.device, seed: int, augment: bool):
    """fit_gan for ``budget`` images, then the sampler as genloop.stages.train.train_model prepares it."""
    cfg = params.train.gan.model_copy(update={"conditional": conditional, "images": budget})
    if augment and params.augment.copies and cfg.augmented:
        from genloop.stages.augment import augment_images

        copies = augment_images(images, params.augment, seed)  # copy c of image i is row c * N + i
        images, labels = np.concatenate([images, copies]), np.tile(labels, 1 + params.augment.copies)
    torch.manual_seed(seed)
    train_labels = Labels.of(torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(val_labels.astype(np.int64)))
    trainer = fit_gan(cfg, to_tensor(images), to_tensor(val), device, torch.Generator().manual_seed(seed),
                      labels=train_labels if conditional else None)
    started = time.perf_counter()
    history = []
    for epoch, n in enumerate(epoch_plan(budget, len(images)), 1):
        history.append(trainer.run_epoch(n))
        print(f"{'conditional' if conditional else 'unconditional'}: epoch {epoch}, "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    sampler = trainer.sampler
    if trainer.sampler_name == "generator_ema":
        recalibrate_batch_norm(WithDrawnLabels(sampler, train_labels.train, seed) if conditional else sampler,
                               cfg.latent_dim, seed)
    return sampler.eval(), cfg, {"images": budget, "training_images": len(images), "epochs": len(history),
                                 "seconds": round(seconds, 1), "images_per_s": round(budget / seconds, 1),
                                 "last_epoch": {k: round(v, 4) for k, v in history[-1].items()}}


@torch.no_grad()
def unconditional_samples(sampler, n: int, latent_dim: int, seed: int, device: torch.device) -> torch.Tensor:
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    return torch.cat([sampler(chunk.to(device)).float().cpu() for chunk in z.split(1024)]).clamp(0, 1)


def save_png(images: np.ndarray, path: Path, row_labels: list[int] | None = None) -> str:
    try:
        from genloop.io import imaging

        data = (imaging.grid_image(images, ncols=8) if row_labels is None
                else imaging.labelled_rows_image(images, row_labels))
        path.write_bytes(data)
        return str(path)
    except ImportError:  # no Pillow: keep the pixels
        np.save(path.with_suffix(".npy"), images)
        return str(path.with_suffix(".npy"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data" / "mnist-t10k"),
                        help="IDX folder (default ../shared/data/mnist-t10k beside the repository)")
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument("--images", type=int, default=None, help="training images per arm (default train.gan.images)")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    parser.add_argument("--train-images", type=int, default=8000)
    parser.add_argument("--held-out-images", type=int, default=2000)
    parser.add_argument("--no-augment", action="store_true", help="ignore train.gan.augmented (no augmented copies)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default=None, help="folder for results.json and the grids")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    seed, budget = params.seed, args.images or params.train.gan.images
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    images, labels = read_idx_folder(Path(args.data))
    t, n = args.train_images, args.train_images + args.held_out_images
    if n > len(images):
        raise SystemExit(f"{args.data} holds {len(images)} images; --train-images + --held-out-images is {n}")
    train, train_labels = images[:t], labels[:t].astype(np.int64)
    held, held_labels = images[t:n], labels[t:n].astype(np.int64)
    half = len(held) // 2
    classes = trained_classes(train_labels)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    ev = params.evaluate
    classifier = train_classifier(to_tensor(train), torch.from_numpy(train_labels), ev.feature_dim,
                                  class_count(train_labels, held_labels), ev.classifier_epochs, seed, arch="cnn")
    classifier_s = time.perf_counter() - started
    print(f"classifier trained ({classifier_s:.0f} s)", file=sys.stderr)
    reference, _ = embed(classifier, to_tensor(train), ev.batch_size)
    held_raw, held_logits = embed(classifier, to_tensor(held), ev.batch_size)
    floor_per_class, floor_mean = label_fidelity(held_logits.argmax(1), held_labels, classes)
    result: dict = {
        "settings": {"data": args.data, "train_images": t, "held_out_images": len(held), "images_per_arm": budget,
                     "device": str(device), "augmented": bool(not args.no_augment and params.augment.copies
                                                              and params.train.gan.augmented),
                     "seed": seed, "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "machine": platform.machine(), "classifier_s": round(classifier_s, 1)},
        "floor": {"fid": frechet_distance(reference, held_raw), "classifier_accuracy":
                  float((held_logits.argmax(1).numpy() == held_labels).mean()),
                  "label_fidelity": floor_mean, "label_fidelity_per_class": floor_per_class},
    }
    sample_seed = seed + 1
    for arm, conditional in (("unconditional", False), ("conditional", True)):
        sampler, cfg, info = train_arm(params, train, train_labels, held[:half], held_labels[:half], budget,
                                       conditional, device, seed, not args.no_augment)
        if conditional:
            fake = conditional_samples(sampler, draw_labels(train_labels, len(held), sample_seed), cfg.latent_dim,
                                       sample_seed)
            per_class = math.ceil(len(held) / len(classes))
            asked = per_class_labels(classes, per_class)
            by_class = conditional_samples(sampler, asked, cfg.latent_dim, sample_seed)
            _, logits = embed(classifier, by_class, ev.batch_size)
            fidelity_per_class, fidelity = label_fidelity(logits.argmax(1), asked, classes)
            info |= {"label_fidelity": fidelity, "label_fidelity_per_class": fidelity_per_class,
                     "samples_per_class": per_class}
            rows = by_class.numpy().reshape(len(classes), per_class, *by_class.shape[1:])[:, :10]
            if out:
                info["grid"] = save_png(rows.reshape(-1, *rows.shape[2:]), out / "grid_conditional_per_class.png",
                                        classes)
        else:
            fake = unconditional_samples(sampler, len(held), cfg.latent_dim, sample_seed, device)
            if out:
                info["grid"] = save_png(fake[:64].numpy(), out / "grid_unconditional.png")
        raw, _ = embed(classifier, fake, ev.batch_size)
        info["fid"] = frechet_distance(reference, raw)
        result[arm] = info
        print(f"{arm}: FID {info['fid']:.2f}" + (f", label fidelity {info['label_fidelity']:.3f}" if conditional else "")
              + f" ({info['seconds']} s)", file=sys.stderr)
    ratio = result["conditional"]["fid"] / result["unconditional"]["fid"]
    result["fid_ratio_conditional_over_unconditional"] = ratio
    result["goals"] = {"label_fidelity_at_least_0.9": result["conditional"]["label_fidelity"] >= 0.9,
                       "fid_ratio_at_most_1.2": ratio <= 1.2}
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        (out / "results.json").write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
