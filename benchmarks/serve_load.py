"""Load test of `genloop serve`: throughput and latency under concurrent V2 infer requests.

Starts a server on the ONNX files in --models (one per --delays value, so dynamic batching can be
compared with none: 0 ms means a request never waits for others), or loads an already running one
given with --url. Each of --concurrency clients sends infer requests of --rows latent vectors in a
loop for --duration seconds; the report gives requests/s, rows/s, latency percentiles, errors, and
from the server's /metrics how many requests and rows each onnxruntime run held.

    .venv/bin/python benchmarks/serve_load.py --models models --model genloop-gan --concurrency 32 --delays 0,2,5
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8000 --model genloop-vae --binary

The clients run in this process (aiohttp, asyncio) and compete with the server for CPU on a small
machine: compare runs with each other, not with another machine's numbers.

With --rates the load comes instead from `hey` in a separate process at fixed request rates
(open loop: hey's workers send on a timer whatever the latency), after a warm-up at the same rate,
and a markdown table gives p50/p99 latency, throughput and errors, with the load average sampled
during each run:

    .venv/bin/python benchmarks/serve_load.py --models models --rates 100 200 --duration 60 --rows 16
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

SERVE = "from genloop.serving.command import serve_command; serve_command()"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} during start-up")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready within {timeout:.0f} s")


def request_body(latent_dim: int, rows: int, seed: int, binary: bool) -> tuple[bytes, dict[str, str]]:
    import json

    z = np.random.default_rng(seed).standard_normal((rows, latent_dim)).astype(np.float32)
    tensor = {"name": "z", "shape": [rows, latent_dim], "datatype": "FP32"}
    if not binary:
        return json.dumps({"inputs": [{**tensor, "data": z.ravel().tolist()}]}).encode(), {"Content-Type": "application/json"}
    head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": z.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + z.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


async def load(url: str, model: str, headers: dict[str, str], bodies: list[tuple[bytes, dict]], concurrency: int,
               duration: float) -> tuple[list[float], int, float]:
    """aiohttp clients (httpx's async pool, not the server, was the bottleneck past ~8 connections)."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=url, connector=connector, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=30)) as client:
        started = time.perf_counter()
        stop = started + duration

        async def worker(i: int) -> None:
            nonlocal errors
            n = i
            while time.perf_counter() < stop:
                content, extra = bodies[n % len(bodies)]
                t0 = time.perf_counter()
                async with client.post(f"/v2/models/{model}/infer", data=content, headers=extra) as response:
                    await response.read()
                    ok = response.status == 200
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
                n += concurrency

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


def batch_stats(url: str, model: str) -> tuple[float, float, float]:
    """(onnxruntime runs, requests per run, rows per run) so far, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.labels.get("model") == model and s.name.endswith(("_sum", "_count")):
                values[s.name] = s.value
    runs = values.get("genloop_serve_batch_requests_count", 0.0)
    return runs, values.get("genloop_serve_batch_requests_sum", 0.0), values.get("genloop_serve_batch_rows_sum", 0.0)


def run_once(url: str, args, headers: dict[str, str]) -> dict:
    meta = httpx.get(f"{url}/v2/models/{args.model}", headers=headers)
    meta.raise_for_status()
    latent_dim = meta.json()["inputs"][0]["shape"][1]
    bodies = [request_body(latent_dim, args.rows, seed, args.binary) for seed in range(16)]
    asyncio.run(load(url, args.model, headers, bodies, min(args.concurrency, 4), 1.0))  # warm the connections
    before = batch_stats(url, args.model)
    latencies, errors, elapsed = asyncio.run(load(url, args.model, headers, bodies, args.concurrency, args.duration))
    after = batch_stats(url, args.model)
    runs = after[0] - before[0]
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "requests": len(latencies), "errors": errors, "req_s": len(latencies) / elapsed,
        "rows_s": len(latencies) * args.rows / elapsed, "p50": np.percentile(ms, 50), "p95": np.percentile(ms, 95),
        "p99": np.percentile(ms, 99), "runs": runs,
        "req_per_run": (after[1] - before[1]) / runs if runs else float("nan"),
        "rows_per_run": (after[2] - before[2]) / runs if runs else float("nan"),
    }


# ---- fixed request rates with hey ---------------------------------------------------------------------
HEY_WORKER_RATE = 5  # requests/s per hey worker: a worker falls behind only past 200 ms of latency


def run_hey(url: str, model: str, body: Path, headers: dict[str, str], rate: int, seconds: float,
            worker_rate: float = HEY_WORKER_RATE) -> dict:
    """One hey run at ``rate`` requests/s; its summary parsed, with the load average sampled meanwhile."""
    import re
    import shutil
    import threading

    hey = shutil.which("hey")
    if hey is None:
        raise SystemExit("hey is not installed (Debian: apt-get install hey)")
    workers = max(1, round(rate / worker_rate))
    cmd = [hey, "-z", f"{seconds:g}s", "-c", str(workers), "-q", f"{rate / workers:g}", "-m", "POST", "-D", str(body),
           "-t", "10"]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    cmd.append(f"{url}/v2/models/{model}/infer")
    loads: list[float] = []
    done = threading.Event()

    def sample_load() -> None:
        while not done.wait(5.0):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        done.set()
        sampler.join()

    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        return float(found.group(1)) if found else float("nan")

    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors_section = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    transport = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]", errors_section, re.M))
    ok = statuses.get(200, 0)
    return {
        "rate": rate, "workers": workers, "ok": ok, "errors": sum(statuses.values()) - ok + transport,
        "req_s": number(r"Requests/sec:\s+([\d.]+)"), "ok_s": ok / seconds,
        "p50": number(r"50%+ in ([\d.]+) secs") * 1000, "p99": number(r"99%+ in ([\d.]+) secs") * 1000,
        "slowest": number(r"Slowest:\s+([\d.]+) secs") * 1000,
        "load_mean": float(np.mean(loads)) if loads else os.getloadavg()[0],
        "load_max": float(np.max(loads)) if loads else os.getloadavg()[0],
    }


def fixed_rates(url: str, args, headers: dict[str, str]) -> list[dict]:
    import tempfile

    meta = httpx.get(f"{url}/v2/models/{args.model}", headers=headers)
    meta.raise_for_status()
    latent_dim = meta.json()["inputs"][0]["shape"][1]
    content, extra = request_body(latent_dim, args.rows, 0, args.binary)
    results = []
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(content)
        extra = {**headers, **extra}
        if not args.binary:
            extra["Content-Type"] = "application/json"
        for rate in args.rates:
            run_hey(url, args.model, body, extra, rate, args.warmup, args.hey_worker_rate)
            results.append(run_hey(url, args.model, body, extra, rate, args.duration, args.hey_worker_rate))
    return results


def print_rates_table(args, results: list[dict], latent_dim: int | None = None) -> None:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{args.model}: infer requests of a ({args.rows}, latent) FP32 tensor, "
          f"{'binary tensor extension (request and response)' if args.binary else 'JSON'}; hey, "
          f"{args.duration:g} s per rate after {args.warmup:g} s warm-up; {os.cpu_count()} CPUs; `uptime` after: {uptime}")
    print()
    print("| target req/s | hey workers | achieved req/s | OK images/s | p50 ms | p99 ms | slowest ms | errors "
          "| load avg during run (mean / max) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['rate']} | {r['workers']} | {r['req_s']:.1f} | {r['ok_s'] * args.rows:.0f} | {r['p50']:.1f} "
              f"| {r['p99']:.1f} | {r['slowest']:.1f} | {r['errors']} | {r['load_mean']:.1f} / {r['load_max']:.1f} |")


def start_server(args, delay: float | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **({"GENLOOP_SERVE_TOKEN": args.token} if args.token else {})}
    cmd = [sys.executable, "-c", SERVE, "--models", str(args.models), "--port", str(port), "--device", args.device,
           "--threads", str(args.threads), "--max-batch-rows", str(args.max_batch_rows),
           "--max-rows-per-request", str(max(1024, args.rows)), "--log-level", "warning"]
    if delay is not None:
        cmd += ["--max-batch-delay-ms", str(delay)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
    except BaseException:
        proc.terminate()
        raise
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running server (otherwise one is started per --delays value)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder with the exported ONNX files")
    parser.add_argument("--model", default="genloop-gan")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rows", type=int, default=1, help="latent vectors per request")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run")
    parser.add_argument("--binary", action="store_true", help="binary tensors (as tritonclient sends) instead of JSON")
    parser.add_argument("--delays", default="0,5", help="max-batch-delay-ms values to compare (started servers only)")
    parser.add_argument("--max-batch-rows", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads of a started server")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--token", default=os.environ.get("GENLOOP_SERVE_TOKEN"))
    parser.add_argument("--rates", type=int, nargs="+", help="fixed request rates (req/s) sent by hey instead")
    parser.add_argument("--hey-worker-rate", type=float, default=HEY_WORKER_RATE,
                        help="requests/s per hey worker (hey's workers tick together: N workers send bursts of N)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds at each rate before the measured run")
    parser.add_argument("--batch-delay-ms", type=float, default=None,
                        help="max-batch-delay-ms of the server started for --rates (default: serve's own)")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}

    if args.rates:
        if args.url:
            wait_ready(args.url, None)
            print_rates_table(args, fixed_rates(args.url, args, headers))
            return
        proc, url = start_server(args, args.batch_delay_ms)
        try:
            results = fixed_rates(url, args, headers)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print_rates_table(args, results)
        return

    results: list[tuple[str, dict]] = []
    if args.url:
        wait_ready(args.url, None)
        results.append((args.url, run_once(args.url, args, headers)))
    else:
        for delay in [float(d) for d in args.delays.split(",")]:
            proc, url = start_server(args, delay)
            try:
                results.append((f"delay {delay:g} ms", run_once(url, args, headers)))
            finally:
                proc.terminate()
                proc.wait(timeout=30)

    print(f"{args.model}: {args.concurrency} clients x {args.rows} row(s)/request, "
          f"{'binary' if args.binary else 'JSON'} tensors, {args.duration:g} s per run")
    print(f"{'server':<16}{'req/s':>9}{'rows/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'req/run':>9}{'rows/run':>10}{'errors':>8}")
    for label, r in results:
        print(f"{label:<16}{r['req_s']:>9.0f}{r['rows_s']:>10.0f}{r['p50']:>9.1f}{r['p95']:>9.1f}{r['p99']:>9.1f}"
              f"{r['req_per_run']:>9.2f}{r['rows_per_run']:>10.1f}{r['errors']:>8d}")


if __name__ == "__main__":
    main()
