"""Which GAN settings bring the emoji GAN's FID towards its real-vs-real floor: train the GAN once per
variant on the same collected, cleaned and augmented emoji project, and score every variant under the
same evaluation classifier (run on demand).

    cd EMOJI_PROJECT && python ../genloop/benchmarks/emoji_gan_levers.py --params recipes/emoji.yaml \\
        --parallel 2 'base=train.gan.conditional=false;train.gan.augmented=true;train.gan.diffaugment=[]' \\
        recipe= recipe-seed7=seed=7

EMOJI_PROJECT is a project after ``genloop --params recipes/emoji.yaml collect --source emoji``, ``clean``
and ``augment``. Each variant is NAME=KEY=VALUE;KEY=VALUE... (``-S`` overrides on top of ``--params``;
NAME= alone is the params as they are). A variant trains with ``genloop train --model gan`` on one
thread in its own copy of the project (WORK/NAME), ``--parallel`` of them at a time, then draws as many
samples as there are held-out images and scores them as evaluate does: FID against the training
split in the evaluation classifier's raw features (trained once, saved in the project and reused),
fid_alt in the alternative network's, each with its ratio to the held-out images' floor, and a grid of
64 samples (WORK/NAME/samples.png). Seeds other than the project's change the training draws only:
the split and the classifier stay the project's.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

COPIED = ("params.yaml", "recipes", "data", "data.dvc", "dvc.yaml", "outputs", "mlflow")


def train(project: Path, work: Path, params: str, name: str, overrides: list[str]) -> tuple[str, float]:
    """Train the GAN of variant ``name`` in a copy of ``project``; returns (name, wall seconds)."""
    copy = work / name
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(parents=True)
    for item in COPIED:
        if (project / item).is_dir():
            shutil.copytree(project / item, copy / item, ignore=shutil.ignore_patterns("checkpoints"))
        elif (project / item).exists():
            shutil.copy2(project / item, copy / item)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    sets = [arg for key in ["train.threads=1", *overrides] for arg in ("-S", key)]
    started = time.time()
    with open(copy / "train.log", "w") as log:
        subprocess.run([sys.executable, "-m", "genloop.cli", "--params", params, *sets, "train", "--model", "gan"],
                       cwd=copy, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return name, time.time() - started


def score(project: Path, params_file: str, checkpoints: dict[str, Path]) -> None:
    """FID and fid_alt of each checkpoint's samples, and their ratios to the floors."""
    import torch

    from genloop.config import load_params, sampling_seed
    from genloop.core import quality
    from genloop.core.models.classifier import embed
    from genloop.evaluation.scoring import load_evaluation_data
    from genloop.io.imaging import save_grid
    from genloop.paths import ProjectPaths
    from genloop.stages.evaluate import sample

    torch.set_num_threads(1)
    params = load_params(project / params_file)
    data = load_evaluation_data(params, ProjectPaths.at(project))
    floor = quality.fid(data.reference_raw, embed(data.classifier, data.held_out)[0])
    floor_alt = quality.fid(data.reference_alt_raw, embed(data.alt_classifier, data.held_out)[0])
    print(f"classifier held-out accuracy {data.classifier_accuracy:.3f}; floor {floor:.2f}, alt floor {floor_alt:.3f}")
    for name, checkpoint in checkpoints.items():
        fakes = sample(checkpoint, len(data.held_out), sampling_seed(params.seed), data.reference_labels)
        fid = quality.fid(data.reference_raw, embed(data.classifier, fakes)[0])
        alt = quality.fid(data.reference_alt_raw, embed(data.alt_classifier, fakes)[0])
        save_grid(fakes[:64].numpy(), checkpoint.parent.parent.parent.parent / "samples.png", 8)
        print(f"{name}: FID {fid:.2f} ({fid / floor:.2f}x floor), fid_alt {alt:.3f} ({alt / floor_alt:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--work", type=Path, default=Path("gan-levers"))
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("variants", nargs="+", help="NAME=KEY=VALUE;KEY=VALUE...")
    args = parser.parse_args()
    project = Path.cwd()
    variants = {v.split("=", 1)[0]: [o for o in v.split("=", 1)[1].split(";") if o] for v in args.variants}
    score(project, args.params, {})  # trains and saves the classifier once, before the copies are made
    with ThreadPoolExecutor(args.parallel) as pool:
        for name, wall in pool.map(lambda item: train(project, args.work, args.params, *item), variants.items()):
            print(f"{name}: trained in {wall:.0f} s ({', '.join(variants[name]) or 'as --params'})", flush=True)
    score(project, args.params, {n: args.work / n / "outputs" / "train" / "gan" / "model.pt" for n in variants})


if __name__ == "__main__":
    main()
