"""The membership-inference audit of `genloop evaluate` for a trained project folder: how well an
attacker tells the clean training images from held-out ones (val + test), per model and attack.

Reads the project's params.yaml (code defaults where it has none), its clean splits
(data/clean/*.npz) and trained models (outputs/train/{vae,gan}/model.pt); writes nothing there.
E.g. on MNIST t10k (after `genloop --root MNIST_PROJECT run` or the stages up to train):

    python benchmarks/membership_audit.py --root MNIST_PROJECT --seeds 0 1 2 --samples 10000 50000

Each ``--samples`` count is one distance attack (a larger draw is a stronger attacker); each
``--seeds`` value picks other balanced subsets, ELBO noise and generated samples, so the spread
over seeds shows how much of a figure is chance. The ELBO attack (VAE) does not use samples.
With the project's seed and ``evaluate.audit_samples`` the figures are those evaluate writes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from genloop.core import membership
from genloop.config import load_params
from genloop.io.datasets import load_split, to_tensor
from genloop.stages.evaluate import membership_audit
from genloop.config import MODELS
from genloop.paths import ProjectPaths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="a trained genloop project folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the project's seed")
    parser.add_argument("--samples", type=int, nargs="+", default=None,
                        help="generated samples the distance attack searches (default: evaluate.audit_samples)")
    parser.add_argument("--images", type=int, default=None, help="images per side (default: evaluate.audit_images)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    paths = ProjectPaths.at(args.root)
    params = load_params(paths.params)
    config = params.evaluate
    if args.images is not None:
        config = config.model_copy(update={"audit_images": args.images})
    if config.audit_images == 0:
        parser.error("--images (or evaluate.audit_images) is 0: nothing to audit")
    seeds = args.seeds or [params.seed]
    members = to_tensor(load_split(paths, "train")[0])
    non_members = to_tensor(np.concatenate([load_split(paths, s)[0] for s in ("val", "test")]))
    n = min(len(members), len(non_members), config.audit_images)
    print(f"{args.root}: {len(members)} training images, {len(non_members)} held-out (val + test); "
          f"{n} per side; chance AUC 0.5 +- {2 * membership.standard_error(0.5, n):.3f} (2 s.e.)")

    rows: list[dict] = []
    counts = args.samples or [config.audit_samples]
    for samples in counts:
        audit_config = config.model_copy(update={"audit_samples": samples})
        for kind in MODELS:
            started = time.perf_counter()
            per_seed = [membership_audit(members, non_members, paths.train(kind) / "model.pt", kind, audit_config,
                                         seed)[0] for seed in seeds]
            seconds = (time.perf_counter() - started) / len(seeds)
            for attack in ("distance", "elbo"):
                if f"mia_{attack}_auc" not in per_seed[0] or (attack == "elbo" and samples != counts[0]):
                    continue  # the ELBO attack uses no samples: one row
                aucs = [m[f"mia_{attack}_auc"] for m in per_seed]
                tprs = [m[f"mia_{attack}_tpr_at_1fpr"] for m in per_seed]
                rows.append({"model": kind, "attack": attack, "samples": samples if attack == "distance" else None,
                             "images_per_side": n, "seeds": seeds, "auc": aucs, "tpr_at_1fpr": tprs,
                             "seconds_per_seed": seconds})

    print("\n| model | attack | samples searched | ROC AUC, mean (min-max) | TPR at 1% FPR, mean (min-max) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for row in rows:
        spread = lambda v: f"{statistics.fmean(v):.3f} ({min(v):.3f}-{max(v):.3f})"  # noqa: E731
        print(f"| {row['model']} | {row['attack']} | {row['samples'] or '-'} | {spread(row['auc'])} "
              f"| {spread(row['tpr_at_1fpr'])} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
