"""ONNX Runtime against PyTorch eager for the VAE decoder and the GAN generator.

Loads the trained checkpoints of a project (outputs/train/{vae,gan}/model.pt), exports each sampler
to ONNX as `genloop export` does, and times one call per repetition at each batch size, alternating
eager and onnxruntime call by call (so both see the same machine load), on the same number of
threads. Prints a markdown table of median latency per call and the speed-up.

    .venv/bin/python benchmarks/ort_vs_eager.py --project PROJECT --batches 1 64 --reps 2000 --threads 2

Eager runs under torch.no_grad(); onnxruntime with the session options of
`genloop serve` (sequential execution, no spinning threads).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def ort_session(path: Path, threads: int, spinning: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_interleaved(calls: dict[str, callable], reps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call for each callable, alternating which one goes first every repetition."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times = {name: [] for name in names}
    for i in range(reps):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="project root with outputs/train/{vae,gan}/model.pt")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--reps", type=int, default=2000, help="timed calls per implementation and batch size")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--spinning", action="store_true", help="let onnxruntime threads spin (not what serve does)")
    args = parser.parse_args()

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from genloop.io.checkpoints import load_sampler
    from genloop.stages.export import INPUT_NAME, OUTPUT_NAME, export_onnx

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ort-vs-eager-") as tmp:
        for kind, label in (("vae", "VAE decoder"), ("gan", "GAN generator")):
            checkpoint = args.project / "outputs" / "train" / kind / "model.pt"
            module, latent_dim = load_sampler(checkpoint)
            module.eval()
            params = sum(p.numel() for p in module.parameters())
            onnx_path = Path(tmp) / f"{kind}.onnx"
            export_onnx(module, latent_dim, onnx_path)
            sess = ort_session(onnx_path, args.threads, args.spinning)
            for batch in args.batches:
                z = torch.randn(batch, latent_dim, generator=torch.Generator().manual_seed(batch))
                z_np = z.numpy()
                with torch.no_grad():
                    expected = module(z).numpy()
                got = sess.run([OUTPUT_NAME], {INPUT_NAME: z_np})[0]
                diff = float(np.max(np.abs(got - expected)))

                def eager(module=module, z=z):
                    with torch.no_grad():
                        module(z)

                def onnxruntime(sess=sess, z_np=z_np):
                    sess.run([OUTPUT_NAME], {INPUT_NAME: z_np})

                times = time_interleaved({"eager": eager, "ort": onnxruntime}, args.reps, args.warmup)
                e_ms, o_ms = (statistics.median(times[k]) * 1000 for k in ("eager", "ort"))
                e_p90, o_p90 = (float(np.percentile(times[k], 90)) * 1000 for k in ("eager", "ort"))
                rows.append((label, params, tuple(expected.shape[1:]), batch, e_ms, e_p90, o_ms, o_p90, e_ms / o_ms, diff))

    load = os.getloadavg()
    print(f"{args.reps} interleaved calls per cell after {args.warmup} warm-up, {args.threads} thread(s), "
          f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}; "
          f"load average after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print()
    print("| model | parameters | output | batch | eager median (p90) ms | onnxruntime median (p90) ms "
          "| speed-up (median) | max abs diff |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for label, params, shape, batch, e_ms, e_p90, o_ms, o_p90, ratio, diff in rows:
        print(f"| {label} | {params:,} | {'x'.join(map(str, shape))} | {batch} | {e_ms:.3f} ({e_p90:.3f}) "
              f"| {o_ms:.3f} ({o_p90:.3f}) | {ratio:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
