"""Throughput of several GAN trainings at once on one machine, with and without genloop's OpenMP settings
(run on demand).

Each training is its own process, as on a team machine or in a sweep: genloop's MNIST-sized GAN
(``GANConfig()`` defaults, 28x28, ``genloop.stages.train.fit_gan``) on MNIST t10k (or synthetic 28x28
images when the folder is missing). The trainings of one scenario are started together, warm up,
then all measure over the same wall-clock window (so none runs alone at the end), and report images/s.

Arms:
- ``spin`` (before the fix): torch is imported before genloop, with no OMP_WAIT_POLICY, so OpenMP keeps
  its default policy, in which idle threads spin-wait for work.
- ``passive`` (genloop's default now): genloop is imported first and sets OMP_WAIT_POLICY=PASSIVE.
Both with ``--threads`` torch intra-op threads each (0: genloop's default, ``TrainConfig.torch_threads``).

Every figure is reported as a ratio to a quiet baseline measured in the same session: one ``passive``
training alone with the first ``--threads``, run before the table and again after it (the faster of the
two is the baseline; both are printed with the load average). Before each baseline run the script waits
up to ``--quiet-wait`` seconds for the 1-minute load average to fall under ``--quiet-load``, and says
whether it did, so a baseline taken on a busy machine is marked as such. Each row shows its ratio beside
the fair share (1/n of the baseline). The arms run side by side for each number of trainings,
``--rounds`` times, since the load of other processes on a shared machine changes from minute to minute.

    .venv/bin/python benchmarks/train_contention.py --data ../shared/data/mnist-t10k
    .venv/bin/python benchmarks/train_contention.py --threads 1 2 --trainings 1 2 3 --seconds 15
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ARMS = ("spin", "passive")
OPENMP_VARS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS")


def worker(args: argparse.Namespace) -> None:
    """One training: warm up, wait for the common start, count images trained until the window closes."""
    if args.arm == "spin":
        import torch  # noqa: F401 - first, so OpenMP starts before genloop could set its policy
    import genloop  # noqa: F401 - sets OMP_WAIT_POLICY=PASSIVE unless already set (the passive arm)
    import torch

    from genloop.config import GANConfig, TrainConfig
    from genloop.io.datasets import to_tensor
    from genloop.stages.train import fit_gan

    torch.set_num_threads(TrainConfig(threads=args.threads[0]).torch_threads())
    torch.manual_seed(0)
    data = to_tensor(load_images(args.data))
    cfg = GANConfig()
    trainer = fit_gan(cfg, data, data[:64], torch.device("cpu"), torch.Generator().manual_seed(0))
    chunk = cfg.batch_size * args.steps_per_call
    trainer.run_epoch(images=chunk)  # warm-up: allocations, first-call costs
    print("ready", flush=True)
    sys.stdin.readline()  # the parent's go, once every training of the scenario is ready
    images, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < args.seconds:
        trainer.run_epoch(images=chunk)
        images += chunk
    wall = time.perf_counter() - started
    print(json.dumps({"images_per_s": images / wall, "cpu_per_wall": (time.process_time() - cpu) / wall,
                      "threads": torch.get_num_threads(), "policy": os.environ.get("OMP_WAIT_POLICY", "default")}))


def load_images(folder: Path | None):
    import numpy as np

    if folder is not None and folder.is_dir():
        from genloop.io.idx import read_idx_folder

        return read_idx_folder(folder)[0]
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(10_000, 28, 28), dtype=np.uint8)


def scenario(arm: str, threads: int, trainings: int, args: argparse.Namespace) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARS}
    cmd = [sys.executable, __file__, "--worker", "--arm", arm, "--threads", str(threads), "--seconds",
           str(args.seconds), "--steps-per-call", str(args.steps_per_call)]
    if args.data is not None:
        cmd += ["--data", str(args.data)]
    procs = [subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(trainings)]
    for proc in procs:  # all warmed up before any measures
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"a training of {arm}/{threads} threads/{trainings} at once failed to start")
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a training of {arm}/{threads} threads/{trainings} at once failed ({proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="IDX folder (default: synthetic 28x28 images)")
    parser.add_argument("--threads", type=int, nargs="+", default=[0], help="torch threads per training (0: genloop's default)")
    parser.add_argument("--trainings", type=int, nargs="+", default=[1, 2, 3], help="trainings at once")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window of each scenario")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole table (load on a shared machine varies)")
    parser.add_argument("--steps-per-call", type=int, default=5)
    parser.add_argument("--quiet-load", type=float, default=1.5,
                        help="the baseline waits for the 1-minute load average to fall under this")
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="longest wait for it, seconds")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arm", choices=ARMS, default="passive", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"{len(os.sched_getaffinity(0))} usable cores, load average {os.getloadavg()[0]:.2f} at the start; "
          f"{args.seconds:g} s window; data {args.data or 'synthetic'}")
    before = quiet_baseline(args, "before")
    rows = [(arm, threads, n, scenario(arm, threads, n, args), os.getloadavg()[0])
            for _ in range(args.rounds)
            for n in args.trainings  # the arms side by side, so a change in outside load hits both alike
            for threads in args.threads for arm in args.arms]
    after = quiet_baseline(args, "after")
    baseline = max(before["images_per_s"], after["images_per_s"])
    print(f"\nbaseline: one passive training alone, {args.threads[0]} threads: {baseline:,.0f} images/s "
          f"(the faster of before and after)\n")
    print("| arm | threads each | trainings | images/s each | ratio to the baseline, each (fair share) "
          "| CPU s per wall s each | load average after |")
    print("| --- | ---: | ---: | --- | --- | --- | ---: |")
    for label, run in (("before", before), ("after", after)):
        print(f"| baseline ({label}; load {run['load_before']:.1f} before, quiet: {run['quiet']}) | "
              f"{run['threads']} | 1 | {run['images_per_s']:,.0f} | {run['images_per_s'] / baseline:.2f} (1.00) | "
              f"{run['cpu_per_wall']:.2f} | {run['load_after']:.1f} |")
    for arm, threads, n, runs, load in rows:
        each = " / ".join(f"{r['images_per_s']:,.0f}" for r in runs)
        ratios = " / ".join(f"{r['images_per_s'] / baseline:.2f}" for r in runs)
        cpu = " / ".join(f"{r['cpu_per_wall']:.2f}" for r in runs)
        print(f"| {arm} | {runs[0]['threads']} | {n} | {each} | {ratios} ({1 / n:.2f}) | {cpu} | {load:.1f} |")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def quiet_baseline(args: argparse.Namespace, label: str) -> dict:
    """One passive training alone, after waiting (up to ``--quiet-wait`` s) for the load to settle."""
    deadline = time.monotonic() + args.quiet_wait
    while os.getloadavg()[0] >= args.quiet_load and time.monotonic() < deadline:
        time.sleep(5)
    load_before = os.getloadavg()[0]
    run = scenario("passive", args.threads[0], 1, args)[0]
    print(f"baseline {label}: {run['images_per_s']:,.0f} images/s, load average {load_before:.2f} before",
          flush=True)
    return {**run, "load_before": load_before, "load_after": os.getloadavg()[0],
            "quiet": "yes" if load_before < args.quiet_load else f"no (>= {args.quiet_load:g})"}


if __name__ == "__main__":
    main()
