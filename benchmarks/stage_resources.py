"""Peak memory and time of each stage for 10,000 images at 28x28x1, 32x32x3 and 64x64x3, as ratios
to the 28x28x1 row: does the in-memory design (every stage holds its whole data set as one array)
still fit a 24 GiB machine when images grow?

    .venv/bin/python benchmarks/stage_resources.py --rows 10000 --work /tmp/stage-resources

Data: synthetic images (smooth random colour fields from a seeded 4x4 grid, upsampled, plus pixel
noise; 10 labels), written as an .npz and read by ``collect --source npz:PATH``, so no data set is
downloaded. Each stage runs in its own child process (``--child``) on a fresh project per shape, in
the loop's order: collect (DVC off), clean (Great Expectations, near-duplicates, splits), augment
(the shipped one copy), train VAE and GAN for a few steps (``--train-images`` each, so the cost of
holding the data is measured, not the budget), evaluate (without MLflow; ``--classifier-epochs``)
and export (ONNX and parity, not registered).

Peak memory is the child's ``ru_maxrss`` from ``os.wait4`` (the whole process: Python, torch and
the libraries included); ``imports`` is a child that only imports every stage module, the floor
under every row. Time is the wall and CPU time of the stage call alone, imports excluded.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHAPES = ((28, 28, 1), (32, 32, 3), (64, 64, 3))
STAGES = ("imports", "collect", "clean", "augment", "train_vae", "train_gan", "evaluate", "export")


def synthetic_images(rows: int, height: int, width: int, channels: int, seed: int = 0):
    """(rows, H, W[, 3]) uint8: a seeded 4x4 field upsampled to the image, plus noise; never blank and
    never near-duplicates of each other."""
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(rows, 4, 4, channels)).astype(np.float32)
    fields = coarse.repeat(-(-height // 4), axis=1).repeat(-(-width // 4), axis=2)[:, :height, :width]
    noisy = fields + rng.normal(0, 12, size=fields.shape).astype(np.float32)
    images = np.clip(noisy, 0, 255).astype(np.uint8)
    labels = rng.integers(0, 10, size=rows).astype(np.int64)
    return (images[..., 0] if channels == 1 else images), labels


def child(stage: str, root: Path, overrides: dict) -> dict:
    """Run one stage in this process; its wall and CPU time, imports excluded."""
    from genloop.config import load_params
    from genloop.paths import ProjectPaths
    from genloop.stages import augment, clean, collect, evaluate, export, train

    params = load_params(root / "absent-params.yaml", overrides)
    paths = ProjectPaths(root)
    calls = {
        "imports": lambda: None,
        "collect": lambda: collect.collect(params.collect, paths, version_with_dvc=False),
        "clean": lambda: clean.clean(params.clean, paths),
        "augment": lambda: augment.augment(params.augment, paths, params.seed),
        "train_vae": lambda: train.train_model("vae", params, paths, resume=False),
        "train_gan": lambda: train.train_model("gan", params, paths, resume=False),
        "evaluate": lambda: evaluate.evaluate(params, paths, log_to_mlflow=False),
        "export": lambda: export.export(params, paths, register=False),
    }
    wall, cpu = time.perf_counter(), time.process_time()
    calls[stage]()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


class ReapingPopen(subprocess.Popen):
    """A Popen that reaps its child with ``os.wait4``, keeping that child's own peak memory."""

    maxrss_kib = 0

    def _try_wait(self, wait_flags):  # CPython's hook under wait(): waitpid, here wait4
        pid, status, usage = os.wait4(self.pid, wait_flags)
        if pid == self.pid:
            self.maxrss_kib = usage.ru_maxrss
        return pid, status


def run_child(stage: str, root: Path, overrides: dict) -> dict:
    """One stage in a fresh process: its figures and the process's peak resident memory."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", stage, str(root), json.dumps(overrides)]
    proc = ReapingPopen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{stage} failed in {root}:\n{err[-3000:]}")
    figures = json.loads(out.strip().splitlines()[-1])
    figures["peak_mib"] = proc.maxrss_kib / 1024
    return figures


def measure_shape(shape: tuple[int, int, int], rows: int, work: Path, overrides: dict) -> dict[str, dict]:
    """A fresh project for one shape, every stage in order."""
    height, width, channels = shape
    root = work / f"{height}x{width}x{channels}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # In a child too: pages this process touched would count in every forked child's ru_maxrss.
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--source", str(root / "source.npz"),
                    str(rows), str(height), str(width), str(channels)], check=True)
    shape_overrides = {**overrides, "collect.source": f"npz:{root / 'source.npz'}"}
    figures = {}
    for stage in STAGES:
        figures[stage] = run_child(stage, root, shape_overrides)
        print(f"{root.name} {stage}: {figures[stage]['peak_mib']:.0f} MiB peak, {figures[stage]['wall_s']:.1f} s wall, "
              f"{figures[stage]['cpu_s']:.1f} s CPU", flush=True)
    return figures


def table(results: dict[str, dict[str, dict]]) -> str:
    """Markdown: each stage's peak MiB and wall s, with the ratio to the first shape's row."""
    base = next(iter(results.values()))
    lines = ["| stage | " + " | ".join(f"{name}: peak MiB (x) / wall s (x)" for name in results) + " |",
             "| --- |" + " ---: |" * len(results)]
    for stage in STAGES:
        cells = []
        for figures in results.values():
            f, b = figures[stage], base[stage]
            cells.append(f"{f['peak_mib']:.0f} ({f['peak_mib'] / b['peak_mib']:.2f}x) / {f['wall_s']:.1f} "
                         f"({f['wall_s'] / max(b['wall_s'], 1e-3):.2f}x)")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--source":
        import numpy as np

        images, labels = synthetic_images(*(int(v) for v in sys.argv[3:7]))
        np.savez(sys.argv[2], images=images, labels=labels)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        stage, root, overrides = sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
        print(json.dumps(child(stage, root, overrides)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/stage-resources"))
    parser.add_argument("--train-images", type=int, default=20_000, help="images each training sees")
    parser.add_argument("--classifier-epochs", type=int, default=2, help="evaluate.classifier_epochs")
    parser.add_argument("--threads", type=int, default=1, help="train.threads")
    parser.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES))
    args = parser.parse_args()
    overrides = {"train.vae.images": args.train_images, "train.gan.images": args.train_images,
                 "evaluate.classifier_epochs": args.classifier_epochs, "train.threads": args.threads,
                 "export.register_models": False}
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    results = {"x".join(map(str, s)): measure_shape(s, args.rows, args.work, overrides) for s in shapes}
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n{args.rows:,} images per shape; load average {os.getloadavg()}\n")
    print(table(results))


if __name__ == "__main__":
    main()
