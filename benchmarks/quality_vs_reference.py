"""Sample quality at equal wall clock: genloop's GAN and VAE against pytorch/examples-style references.

Four arms train on the first 8,000 images of the MNIST test set for the same wall-clock budget on
the same cores: a DCGAN shrunk to 28x28 and the 784-400-20 VAE, both as pytorch/examples writes them
(``reference_models.py``), and genloop's GAN and VAE through ``genloop.stages.train.fit_gan``/``fit_vae``
with the shipped ``params.yaml`` (augmentation included, as the pipeline runs it). Each arm then
draws as many samples as there are held-out images, and ``genloop.evaluation.scoring.score_samples`` scores
all four against the last 2,000 images with one classifier, trained once. The VAEs' test negative
ELBO is computed on the same 2,000 images. Writes a markdown report (stdout and OUT/report.md),
OUT/results.json and each arm's 64-sample grid (OUT/grids/).

    # a 16-core machine: the 4 arms of two budgets at once, 2 cores each (8 processes)
    python benchmarks/quality_vs_reference.py --parallel --budgets 120 300 600 --out OUT
    # a 2-core machine: one arm at a time on both cores
    python benchmarks/quality_vs_reference.py --budgets 60 --out OUT
    python benchmarks/quality_vs_reference.py --tiny --out OUT        # 3 s arms on 500 images
    # another genloop setting: a params file (e.g. recipes/mnist.yaml) and/or dotted overrides
    python benchmarks/quality_vs_reference.py --params recipes/mnist.yaml -S train.vae.beta=4.0 --arms vae_examples genloop_vae

Needs torch, numpy, scipy, scikit-learn, torchmetrics, pandas, pyyaml, pydantic and prdc (and
Pillow for the grid PNGs; without it the grids are saved as .npy); nothing of MLflow, Prefect, DVC
or Great Expectations is imported. Run from the repository root with ``PYTHONPATH=src`` (or genloop
installed).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import genloop  # noqa: F401 - before torch: sets OpenMP's wait policy as every genloop process has it
import torch
import yaml

import reference_models as ref
from genloop.io.arrays import save_npz
from genloop.config import Params, load_params
from genloop.evaluation.scoring import score_samples
from genloop.io.idx import read_idx_folder
from genloop.paths import ProjectPaths
from genloop.io.datasets import to_tensor

REPO_ROOT = Path(__file__).resolve().parents[1]
ARMS = ("dcgan_examples", "genloop_gan", "vae_examples", "genloop_vae")
ARM_LABELS = {
    "dcgan_examples": "DCGAN, pytorch/examples at 28x28 (reference)",
    "genloop_gan": "genloop GAN",
    "vae_examples": "VAE 784-400-20, pytorch/examples (reference)",
    "genloop_vae": "genloop VAE",
}
REFERENCE_OF = {"genloop_gan": "dcgan_examples", "genloop_vae": "vae_examples"}
QUALITY_KEYS = ("fid", "fid_alt", "precision", "recall", "density", "coverage", "class_tvd")
TINY = {"train_images": 400, "held_out_images": 100, "budgets": [3.0],
        "overrides": {"evaluate.classifier_epochs": 3, "evaluate.kid_subsets": 10}}
GRID_SAMPLES = 64


@dataclass(frozen=True)
class Settings:
    """Everything a worker process needs to rebuild the shared context (sent as JSON)."""

    data: str
    train_images: int
    held_out_images: int
    params: str
    overrides: dict[str, Any]
    device: str
    out: str
    samples: int
    augment: bool
    stop_at_images: bool = False


@dataclass(frozen=True)
class Job:
    arm: str
    budget_s: float
    seed: int


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # uint8 (N, H, W)
    train_labels: np.ndarray
    held_out: np.ndarray
    held_out_labels: np.ndarray


@dataclass(frozen=True)
class ArmModel:
    """A trained arm: ``sample(z)`` gives images in [0, 1]; ``neg_elbo(images)`` for VAEs only."""

    sample: Callable[[torch.Tensor], torch.Tensor]
    latent_dim: int
    images_seen: int
    seconds: float
    epochs: float
    neg_elbo: Callable[[torch.Tensor], float] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


# ---- data and the evaluation project -------------------------------------------------------------

def load_data(settings: Settings) -> Split:
    """The first ``train_images`` + ``held_out_images`` images of the IDX folder, split in that order."""
    images, labels = read_idx_folder(Path(settings.data))
    n = settings.train_images + settings.held_out_images
    if n > len(images):
        raise SystemExit(f"{settings.data} holds {len(images)} images; --train-images + --held-out-images is {n}")
    t = settings.train_images
    return Split(images[:t], labels[:t], images[t:n], labels[t:n])


def evaluation_paths(settings: Settings) -> ProjectPaths:
    return ProjectPaths.at(Path(settings.out) / "eval_project")


def write_evaluation_project(paths: ProjectPaths, split: Split) -> None:
    """A project folder whose clean split is exactly ours: train = the training images, val + test =
    the held-out images (halved), which is what ``score_samples`` reads and scores against."""
    half = len(split.held_out) // 2
    parts = {"train": (split.train, split.train_labels),
             "val": (split.held_out[:half], split.held_out_labels[:half]),
             "test": (split.held_out[half:], split.held_out_labels[half:])}
    start = 0
    for name, (images, labels) in parts.items():
        save_npz(paths.clean / f"{name}.npz", images=images, labels=labels.astype(np.int64),
                 ids=np.arange(start, start + len(images), dtype=np.int64))
        start += len(images)


def load_benchmark_params(settings: Settings) -> Params:
    return load_params(settings.params, settings.overrides)


# ---- the arms ------------------------------------------------------------------------------------

def train_genloop(kind: str, params: Params, train: np.ndarray, val: np.ndarray, device: torch.device,
                  seed: int, budget_s: float, augment: bool, stop_at_images: bool = False) -> ArmModel:
    """The one adapter to genloop's training API: fit_gan / fit_vae with the shipped config, epochs
    until the budget is spent, then the sampler as ``train_model`` prepares it.

    Time is checked between epochs: another epoch starts only if it is expected to end less than
    half an epoch after the budget, so the overrun is at most half an epoch (reported as train s).
    With ``stop_at_images`` the training also ends at the config's ``images`` bound, as the loop's
    own training does (whichever comes first).
    """
    from genloop.stages.augment import augment_images
    from genloop.core.models.gan import recalibrate_batch_norm
    from genloop.core.models.vae import negative_elbo_nats
    from genloop.stages.train import fit_gan, fit_vae

    started = time.perf_counter()
    cfg = getattr(params.train, kind)
    images = train
    if augment and params.augment.copies and cfg.augmented:
        images = np.concatenate([train, augment_images(train, params.augment, seed)])
    torch.manual_seed(seed)
    fit = fit_vae if kind == "vae" else fit_gan
    trainer = fit(cfg, to_tensor(images), to_tensor(val), device, torch.Generator().manual_seed(seed),
                  params.train.compile)
    epochs, last_epoch_s = 0, 0.0
    while True:
        elapsed = time.perf_counter() - started
        if elapsed >= budget_s or (epochs and elapsed + 0.5 * last_epoch_s >= budget_s):
            break
        if stop_at_images and epochs * len(images) >= cfg.images:
            break
        epoch_started = time.perf_counter()
        trainer.run_epoch()
        last_epoch_s = time.perf_counter() - epoch_started
        epochs += 1
    seconds = time.perf_counter() - started

    sampler = trainer.sampler
    if trainer.sampler_name == "generator_ema":
        recalibrate_batch_norm(sampler, cfg.latent_dim, seed)
    sampler.eval()

    def sample(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return sampler(z.to(device))

    neg_elbo = None
    if kind == "vae":
        vae = trainer.state["vae"]
        neg_elbo = lambda held: negative_elbo_nats(vae, held.to(device), seed=seed)  # noqa: E731
    return ArmModel(sample, cfg.latent_dim, epochs * len(images), seconds, float(epochs), neg_elbo,
                    notes={"training_images": len(images), "config": cfg.model_dump(),
                           "sampler": trainer.sampler_name or "decoder"})


def train_reference(kind: str, train: np.ndarray, device: torch.device, seed: int, budget_s: float) -> ArmModel:
    fit = ref.train_dcgan if kind == "gan" else ref.train_vae
    trained = fit(to_tensor(train), budget_s, device, seed)
    neg_elbo = None
    if kind == "vae":
        neg_elbo = lambda held: ref.negative_elbo_nats(trained.model, held, seed=seed)  # noqa: E731
    return ArmModel(trained.sample, trained.latent_dim, trained.images_seen, trained.seconds, trained.epochs,
                    neg_elbo, notes={"training_images": len(train)})


def train_arm(job: Job, params: Params, split: Split, settings: Settings) -> ArmModel:
    device = torch.device(settings.device)
    half = len(split.held_out) // 2
    if job.arm == "dcgan_examples":
        return train_reference("gan", split.train, device, job.seed, job.budget_s)
    if job.arm == "vae_examples":
        return train_reference("vae", split.train, device, job.seed, job.budget_s)
    kind = "gan" if job.arm == "genloop_gan" else "vae"
    return train_genloop(kind, params, split.train, split.held_out[:half], device, job.seed, job.budget_s,
                         settings.augment, settings.stop_at_images)


def draw_samples(model: ArmModel, n: int, seed: int, batch_size: int = 1000) -> torch.Tensor:
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed + 1))
    return torch.cat([model.sample(chunk).float().cpu() for chunk in z.split(batch_size)]).clamp(0, 1)


def save_samples_grid(samples: torch.Tensor, path: Path) -> str:
    try:
        from genloop.io.imaging import save_grid

        return str(save_grid(samples[:GRID_SAMPLES].numpy(), path))
    except ImportError:  # no Pillow on this machine: keep the pixels
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".npy"), samples[:GRID_SAMPLES].numpy())
        return str(path.with_suffix(".npy"))


def run_job(job: Job, settings: Settings, split: Split, params: Params) -> dict[str, Any]:
    """Train one arm for its budget, sample, score and save its grid; a JSON-able result row."""
    load_start = os.getloadavg()
    model = train_arm(job, params, split, settings)
    print(f"[{time.strftime('%H:%M:%S')}] {job.arm}: {model.images_seen:,} images in {model.seconds:.0f} s; "
          "sampling and scoring", file=sys.stderr, flush=True)
    started = time.perf_counter()
    samples = draw_samples(model, settings.samples, job.seed)
    held = to_tensor(split.held_out)
    neg_elbo = model.neg_elbo(held) if model.neg_elbo else None
    scores = score_samples(params, evaluation_paths(settings), samples)
    grid = save_samples_grid(samples, Path(settings.out) / "grids" / f"{job.budget_s:g}s_{job.arm}_seed{job.seed}.png")
    return {
        **asdict(job), "train_s": model.seconds, "epochs": model.epochs, "images_seen": model.images_seen,
        "images_per_s": model.images_seen / max(model.seconds, 1e-9), "test_neg_elbo": neg_elbo,
        "score_s": time.perf_counter() - started, "threads": torch.get_num_threads(),
        "cores": sorted(os.sched_getaffinity(0)), "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "grid": grid, "notes": model.notes, "scores": scores,
    }


# ---- running the jobs ----------------------------------------------------------------------------

def run_sequential(jobs: list[Job], settings: Settings, threads: int) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    split, params = load_data(settings), load_benchmark_params(settings)
    results = []
    for job in jobs:
        print(f"[{time.strftime('%H:%M:%S')}] {job.arm} {job.budget_s:g} s seed {job.seed}", file=sys.stderr,
              flush=True)
        try:
            results.append(run_job(job, settings, split, params))
        except Exception as exc:  # one broken arm must not lose the others' figures
            traceback.print_exc()
            results.append({**asdict(job), "failed": f"{type(exc).__name__}: {exc}"})
    return results


def _launch(job: Job, settings: Settings, cores: list[int], work: Path) -> tuple[subprocess.Popen, Path, Path]:
    name = f"{job.budget_s:g}s_{job.arm}_seed{job.seed}"
    spec, result, log = work / f"{name}.job.json", work / f"{name}.result.json", work / f"{name}.log"
    result.unlink(missing_ok=True)
    spec.write_text(json.dumps({"settings": asdict(settings), "job": asdict(job), "result": str(result)}))
    threads = str(len(cores))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    with log.open("w") as fh:  # affinity set before exec, so every thread of the worker inherits it
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=lambda: os.sched_setaffinity(0, cores))
    return proc, result, log


def run_parallel(jobs: list[Job], settings: Settings, cores_per_arm: int) -> list[dict[str, Any]]:
    """Each arm in its own process on its own ``cores_per_arm`` cores; the jobs of one budget start
    together (so they share the machine alike), as many budgets at once as there are free cores."""
    cpus = sorted(os.sched_getaffinity(0))
    slots = [cpus[i:i + cores_per_arm] for i in range(0, len(cpus) - cores_per_arm + 1, cores_per_arm)]
    if not slots:
        raise SystemExit(f"--cores-per-arm {cores_per_arm} exceeds the {len(cpus)} usable cores")
    groups: list[list[Job]] = []
    for budget in dict.fromkeys(j.budget_s for j in jobs):
        same = [j for j in jobs if j.budget_s == budget]
        groups += [same[i:i + len(slots)] for i in range(0, len(same), len(slots))]
    work = Path(settings.out) / "workers"
    work.mkdir(parents=True, exist_ok=True)
    free, running, results = list(slots), [], []

    def reap(block: bool) -> None:
        while True:
            for entry in list(running):
                proc, job, slot, result, log = entry
                if proc.poll() is None:
                    continue
                running.remove(entry)
                free.append(slot)
                if proc.returncode == 0 and result.exists():
                    results.append(json.loads(result.read_text()))
                else:
                    tail = log.read_text()[-2000:]
                    print(f"{job.arm} {job.budget_s:g} s seed {job.seed} failed (exit {proc.returncode}); "
                          f"{log}:\n{tail}", file=sys.stderr)
                    results.append({**asdict(job), "failed": f"exit {proc.returncode}, see {log}"})
            if not block or not running:
                return
            time.sleep(0.5)

    for group in groups:
        while len(free) < len(group):
            time.sleep(0.5)
            reap(block=False)
        print(f"[{time.strftime('%H:%M:%S')}] starting {len(group)} arms of {group[0].budget_s:g} s "
              f"({len(running)} others running)", file=sys.stderr, flush=True)
        for job in group:
            slot = free.pop(0)
            proc, result, log = _launch(job, settings, slot, work)
            running.append((proc, job, slot, result, log))
    reap(block=True)
    return results


def worker_main(spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text())
    settings, job = Settings(**spec["settings"]), Job(**spec["job"])
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    result = run_job(job, settings, load_data(settings), load_benchmark_params(settings))
    target = Path(spec["result"])
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(target)


# ---- the report ----------------------------------------------------------------------------------

def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _mean(values: list[Any]) -> float | None:
    finite = _finite(values)
    return statistics.fmean(finite) if finite and len(finite) == len(values) else None


def _cell(values: list[Any], fmt: str) -> str:
    finite = _finite(values)
    if not values or len(finite) != len(values):
        return "n/a" if not values or all(v is None for v in values) else "nan"
    if len(finite) == 1:
        return format(finite[0], fmt)
    return f"{format(statistics.fmean(finite), fmt)} ± {format(statistics.stdev(finite), fmt)}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b not in (None, 0.0) else "n/a"


def _column(rows: list[dict[str, Any]], key: str) -> list[Any]:
    return [r["scores"].get(key) if key in QUALITY_KEYS else r.get(key) for r in rows]


def budget_tables(results: list[dict[str, Any]], budget: float) -> list[str]:
    rows = {arm: [r for r in results if r["budget_s"] == budget and r["arm"] == arm and "failed" not in r]
            for arm in ARMS}
    failed = [r for r in results if r["budget_s"] == budget and "failed" in r]
    seeds = sorted({r["seed"] for r in results if r["budget_s"] == budget})
    lines = [f"### Budget {budget:g} s of wall clock per arm (seeds {', '.join(map(str, seeds))})", "",
             "| arm | train s | epochs | images seen | img/s | FID | FID / ref | fid_alt | precision | recall "
             "| density | coverage | class_tvd | test neg-ELBO (nats/img) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for arm in ARMS:
        r = rows[arm]
        if not r:
            continue
        reference = REFERENCE_OF.get(arm)
        fid_ratio = _ratio(_mean(_column(r, "fid")), _mean(_column(rows[reference], "fid"))) if reference else "1"
        lines.append(" | ".join([
            f"| {ARM_LABELS[arm]}", _cell(_column(r, "train_s"), ".0f"), _cell(_column(r, "epochs"), ".1f"),
            _cell(_column(r, "images_seen"), ",.0f"), _cell(_column(r, "images_per_s"), ",.0f"),
            _cell(_column(r, "fid"), ".2f"), fid_ratio, _cell(_column(r, "fid_alt"), ".2f"),
            *(_cell(_column(r, k), ".3f") for k in ("precision", "recall", "density", "coverage", "class_tvd")),
            _cell(_column(r, "test_neg_elbo"), ".2f"),
        ]) + " |")
    keys = ("images_per_s", *QUALITY_KEYS, "test_neg_elbo")
    lines += ["", "genloop / reference (means; FID, fid_alt, class_tvd, neg-ELBO: lower is better; "
              "precision, recall, density, coverage: higher is better):", "",
              "| pair | " + " | ".join(k.replace("images_per_s", "img/s").replace("test_neg_elbo", "neg-ELBO")
                                      for k in keys) + " |",
              "| --- |" + " ---: |" * len(keys)]
    for arm, reference in REFERENCE_OF.items():
        if rows[arm] and rows[reference]:
            lines.append(f"| {ARM_LABELS[arm]} / reference | " + " | ".join(
                _ratio(_mean(_column(rows[arm], k)), _mean(_column(rows[reference], k))) for k in keys) + " |")
    for r in failed:
        lines.append(f"\n- {r['arm']} seed {r['seed']} FAILED: {r['failed']}")
    return lines + [""]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def report(results: list[dict[str, Any]], floor: dict[str, float], meta: dict[str, Any],
           params: Params, budgets: list[float]) -> str:
    gan, vae = params.train.gan, params.train.vae
    copies = params.augment.copies if meta["augment"] else 0
    trained_on = [kind for kind in ("gan", "vae") if getattr(params.train, kind).augmented]
    augmentation = (f"{copies} copy per image for the {' and '.join(trained_on) or 'no'} arm(s) "
                    "(train.<model>.augmented; in the budget and in images seen)") if copies else "off"
    floor_cells = ", ".join(f"{k} {floor[k + '_real_floor']:.3f}" for k in QUALITY_KEYS if k + "_real_floor" in floor)
    lines = [
        "## Sample quality at equal wall clock: genloop vs pytorch/examples references", "",
        "```", meta["command"], "```", "",
        f"- {meta['started']} to {meta['ended']} UTC; {meta['machine']}",
        f"- load average (1/5/15 min) at start {meta['load_start']}, at end {meta['load_end']}",
        f"- mode: {meta['mode']}; device {meta['device']}; torch {torch.__version__}",
        f"- data: {meta['data']}: first {meta['train_images']:,} images train every arm, last "
        f"{meta['held_out_images']:,} are held out; each arm draws {meta['samples']:,} samples, scored by "
        "genloop.evaluation.scoring.score_samples against the training images with one classifier "
        f"(held-out accuracy {floor.get('classifier_accuracy', float('nan')):.4f}); test neg-ELBO on all "
        "held-out images (one seeded z per image, BCE-sum + KL)",
        f"- real-vs-real floor (held-out real images scored like samples): {floor_cells}",
        f"- genloop arms: params.yaml{' with ' + json.dumps(meta['overrides']) if meta['overrides'] else ' as shipped'}"
        f"{', stopped at their images bound' if meta['stop_at_images'] else ''}: gan batch {gan.batch_size}, latent {gan.latent_dim}, "
        f"channels {gan.channels}, loss {gan.loss}, EMA {gan.ema_decay}, lr {gan.lr_g}/{gan.lr_d}; vae {vae.arch}, "
        f"batch {vae.batch_size}, latent {vae.latent_dim}, beta {vae.beta}, prior {vae.prior}, images {vae.images:,}, "
        f"lr {vae.lr}; augmentation "
        f"{augmentation}; "
        "time checked between epochs (overrun at most half an epoch, see train s)",
        "- references (benchmarks/reference_models.py): DCGAN nz 100, ngf/ndf 64, BCE, Adam 2e-4 (0.5, 0.999), "
        "batch 128; VAE 784-400-20, BCE-sum + KL, Adam 1e-3, batch 128; time checked between steps",
        "",
    ]
    for budget in budgets:
        lines += budget_tables(results, budget)
    return "\n".join(lines)


# ---- command line --------------------------------------------------------------------------------

def warm_up(settings: Settings, threads: int) -> dict[str, float]:
    """Write the evaluation project and train its classifier once (workers then reuse it); returns the
    held-out images' own scores, whose ``*_real_floor`` keys are the floor."""
    torch.set_num_threads(threads)
    split = load_data(settings)
    paths = evaluation_paths(settings)
    write_evaluation_project(paths, split)
    return score_samples(load_benchmark_params(settings), paths, to_tensor(split.held_out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/mnist-t10k", help="folder of MNIST IDX files")
    parser.add_argument("--budgets", type=float, nargs="+", help="wall-clock seconds per arm (default 120 300 600)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: params.yaml's seed")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/quality_vs_reference"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--parallel", action="store_true", help="each arm in its own process on its own cores")
    parser.add_argument("--cores-per-arm", type=int, default=2, help="--parallel: cores (and threads) per arm")
    parser.add_argument("--threads", type=int, default=0, help="sequential: torch threads (0: all usable cores)")
    parser.add_argument("--train-images", type=int, default=8000)
    parser.add_argument("--held-out-images", type=int, default=2000)
    parser.add_argument("--samples", type=int, help="samples per arm (default: the held-out count)")
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument("--no-augment", action="store_true", help="genloop arms without the augment stage")
    parser.add_argument("--tiny", action="store_true", help="3 s arms on 400 + 100 images: checks the script runs")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="params override for the genloop arms, dotted key and YAML value (repeatable)")
    parser.add_argument("--stop-at-images", action="store_true",
                        help="genloop arms also stop at their train.<model>.images bound, as the loop does")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)

    overrides: dict[str, Any] = {}
    if args.tiny:
        args.train_images, args.held_out_images = TINY["train_images"], TINY["held_out_images"]
        args.budgets = args.budgets or TINY["budgets"]
        overrides = dict(TINY["overrides"])
    overrides.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)})
    budgets = args.budgets or [120.0, 300.0, 600.0]
    params = load_params(args.params, overrides)
    seeds = args.seeds or [params.seed]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    settings = Settings(data=str(Path(args.data).resolve()), train_images=args.train_images,
                        held_out_images=args.held_out_images, params=str(Path(args.params).resolve()),
                        overrides=overrides, device=args.device, out=str(args.out.resolve()),
                        samples=args.samples or args.held_out_images, augment=not args.no_augment,
                        stop_at_images=args.stop_at_images)
    usable = len(os.sched_getaffinity(0))
    threads = args.threads or usable
    started, load_start = datetime.datetime.now(datetime.timezone.utc), os.getloadavg()
    floor = warm_up(settings, threads)
    jobs = [Job(arm, budget, seed) for budget in budgets for seed in seeds for arm in ARMS if arm in args.arms]
    if args.parallel:
        results = run_parallel(jobs, settings, args.cores_per_arm)
        mode = (f"parallel, one process per arm pinned to {args.cores_per_arm} cores with "
                f"{args.cores_per_arm} threads, up to {usable // args.cores_per_arm} at once")
    else:
        results = run_sequential(jobs, settings, threads)
        mode = f"sequential, one arm at a time with {threads} threads"
    order = {(j.budget_s, j.seed, j.arm): i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["budget_s"], r["seed"], r["arm"])])
    ended = datetime.datetime.now(datetime.timezone.utc)
    meta = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__), *(argv or sys.argv[1:])]),
        "started": started.strftime("%Y-%m-%d %H:%M"), "ended": ended.strftime("%H:%M"),
        "machine": f"{os.cpu_count()} CPUs ({usable} usable), {cpu_model()}"
                   + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""),
        "load_start": " / ".join(f"{x:.2f}" for x in load_start),
        "load_end": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "mode": mode, "device": args.device, "data": args.data, "train_images": args.train_images,
        "held_out_images": args.held_out_images, "samples": settings.samples, "augment": settings.augment,
        "overrides": overrides, "stop_at_images": args.stop_at_images,
    }
    text = report(results, floor, meta, params, budgets)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"meta": meta, "floor": floor, "results": results}, indent=1))
    print(text)
    failed = [r for r in results if "failed" in r]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(results)} arms failed; see {out / 'workers'}")


if __name__ == "__main__":
    main()
