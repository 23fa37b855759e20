"""MLflow logging cost: the project's SQLite store against a tracking server, measured in one session.

    .venv/bin/python benchmarks/tracking_overhead.py --epochs 20 --runs 5 --loop-repeats 2

1. Per epoch: what genloop's training loop logs each epoch (one ``log_batch`` of its epoch metrics)
   plus a ``set_tag`` and a small artifact (a 4 KB CSV), and per run what it logs once (create_run
   with tags, a ``log_batch`` of 20 params, a 30 KB PNG and a 1 MB checkpoint, set_terminated).
2. The loop: genloop's own train (VAE + GAN), evaluate and export stages on the bundled digits,
   logging (and registering) to each store; training with a share of params.yaml's budgets
   (``--loop-scale``: 1 is `make run`'s hundreds of epochs, one log_batch each; the default 0.05 keeps
   56 epochs), evaluate and export tiny. Each store gets a fresh copy of the same prepared data (no augmented copies), so each trains
   the evaluation classifier too. The time spent inside MlflowClient calls is clocked as well.

Stores: ``sqlite`` (the default ``sqlite:///…/mlflow.db``, artifacts in a local folder), ``server``
(``mlflow server`` started here: sqlite backend, ``--serve-artifacts``, one worker; artifacts go over
HTTP), and any ``--extra NAME=URI`` (e.g. the PostgreSQL-backed server of ``make services-up``).
Stores are measured in alternating order; ratios are to ``sqlite`` from the same session.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPOCH_METRICS = ("train_loss", "val_loss", "recon", "kl", "images_per_s", "images")
TINY = {"train.vae.images": 2000, "train.gan.images": 2000, "evaluate.classifier_epochs": 1,
        "augment.copies": 0, "train.threads": 2, "evaluate.kid_subsets": 5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", f"sqlite:///{base}/server.db",
         "--serve-artifacts", "--artifacts-destination", str(base / "art"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(base / "server.log", "w"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server stopped; see {base / 'server.log'}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def experiment_for(uri: str, name: str, artifacts: Path) -> str:
    """The experiment, created first so that setup-time costs stay out of the timings; a server keeps
    its artifacts where it serves them (no client-side artifact_location)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    location = artifacts.as_uri() if uri.startswith("sqlite") else None
    return client.create_experiment(name, artifact_location=location)


def one_run(uri: str, experiment_id: str, epochs: int, files: dict[str, Path]) -> tuple[float, list[float], list[float]]:
    """(fixed per-run seconds, per-epoch seconds of the whole set, per-epoch seconds of the log_batch
    alone: what genloop's loop logs each epoch) of the training loop's logging, without training."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    started = time.perf_counter()
    run_id = client.create_run(experiment_id, run_name="bench", tags={
        "mlflow.parentRunId": "0" * 32, "genloop.model": "vae", "git_commit": "0" * 40,
        "dvc_data_hash": "f" * 32 + ".dir"}).info.run_id
    client.log_batch(run_id, params=[Param(f"param_{i}", str(i)) for i in range(20)])
    fixed = time.perf_counter() - started
    per_epoch, batch_only = [], []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        stamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, 1.0 / epoch, stamp, epoch) for k in EPOCH_METRICS])
        batch_only.append(time.perf_counter() - started)
        client.set_tag(run_id, "genloop.last_epoch", str(epoch))
        client.log_artifact(run_id, str(files["history"]), artifact_path="epochs")
        per_epoch.append(time.perf_counter() - started)
    started = time.perf_counter()
    client.log_artifact(run_id, str(files["grid"]))
    client.log_artifact(run_id, str(files["checkpoint"]), artifact_path="checkpoint")
    client.set_terminated(run_id, "FINISHED")
    return fixed + time.perf_counter() - started, per_epoch, batch_only


def make_files(base: Path) -> dict[str, Path]:
    files = {"history": base / "history.csv", "grid": base / "samples.png", "checkpoint": base / "model.pt"}
    files["history"].write_text("epoch,train_loss,val_loss\n" + "".join(f"{i},0.5,0.6\n" for i in range(200)))
    files["grid"].write_bytes(os.urandom(30_000))
    files["checkpoint"].write_bytes(os.urandom(1_000_000))
    return files


def prepared_project(base: Path) -> Path:
    """Digits collected, cleaned and augmented once (no MLflow); each store copies it."""
    from genloop.stages.augment import augment
    from genloop.stages.clean import clean
    from genloop.stages.collect import collect
    from genloop.config import CollectConfig, load_params
    from genloop.paths import ProjectPaths

    root = base / "prepared"
    root.mkdir()
    params = load_params(root / "params.yaml", TINY)
    paths = ProjectPaths.at(root)
    collect(CollectConfig(source="digits"), paths, version_with_dvc=False)
    clean(params.clean, paths)
    augment(params.augment, paths, params.seed)
    return root


class ClientClock:
    """Wall time spent inside MlflowClient's public methods (outermost calls only): the loop's
    tracking time, whichever API (client or fluent) the stages used."""

    def __init__(self) -> None:
        from mlflow import MlflowClient

        self.seconds, self.calls, self._depth, self._saved = 0.0, 0, 0, {}
        for name in dir(MlflowClient):
            attr = getattr(MlflowClient, name)
            if not name.startswith("_") and callable(attr) and not isinstance(attr, type):
                self._saved[name] = attr
                setattr(MlflowClient, name, self._timed(attr))

    def _timed(self, fn):
        def wrapper(*args, **kwargs):
            self._depth += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += time.perf_counter() - started
                    self.calls += 1
        return wrapper

    def restore(self) -> None:
        from mlflow import MlflowClient

        for name, fn in self._saved.items():
            setattr(MlflowClient, name, fn)


def tiny_loop(prepared: Path, dest: Path, uri: str, overrides: dict) -> dict[str, float]:
    """Seconds of genloop's train (VAE, GAN), evaluate and export on a fresh copy, logging to ``uri``,
    and the part of them spent in MLflow calls."""
    import mlflow

    from genloop.config import load_params
    from genloop.stages.evaluate import evaluate
    from genloop.stages.export import export
    from genloop.paths import ProjectPaths
    from genloop.stages.train import train_model

    shutil.copytree(prepared, dest)
    paths = ProjectPaths.at(dest)
    params = load_params(dest / "params.yaml", {**overrides, "mlflow.tracking_uri": uri,
                                                "mlflow.artifact_root": str(dest / "mlflow" / "artifacts"),
                                                "mlflow.experiment": f"loop-{dest.name}"})
    experiment_for(uri, params.mlflow.experiment, dest / "mlflow" / "artifacts")
    times = {}
    clock = ClientClock()
    try:
        started = time.perf_counter()
        parent = None
        epochs = 0
        for kind in ("vae", "gan"):
            result = train_model(kind, params, paths, parent)
            parent, epochs = result.parent_run_id, epochs + result.epochs
        times["train"] = time.perf_counter() - started
        times["train_mlflow"] = clock.seconds
        mark = time.perf_counter()
        evaluate(params, paths)
        times["evaluate"] = time.perf_counter() - mark
        mark = time.perf_counter()
        export(params, paths)
        times["export"] = time.perf_counter() - mark
        times["loop"] = time.perf_counter() - started
        times["mlflow"], times["mlflow_calls"], times["epochs"] = clock.seconds, clock.calls, epochs
    finally:
        clock.restore()
        mlflow.set_tracking_uri(None)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs per synthetic run")
    parser.add_argument("--runs", type=int, default=3, help="synthetic runs per store (alternating)")
    parser.add_argument("--loop-repeats", type=int, default=1, help="loops per store (0: skip)")
    parser.add_argument("--loop-scale", type=float, default=0.05,
                        help="training budgets as a share of params.yaml's (1: `make run`'s ~800 VAE and ~300 GAN "
                             "epochs on the digits; 0.05: 40 and 16). Evaluate and export are tiny.")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=URI",
                        help="another store to measure, e.g. postgres=http://127.0.0.1:5050")
    parser.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "1",
                       "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: stop the server
    from genloop.config import load_params

    budgets = load_params(Path("no-such-params.yaml")).train
    overrides = {**TINY, "train.vae.images": int(budgets.vae.images * args.loop_scale),
                 "train.gan.images": int(budgets.gan.images * args.loop_scale)}
    base = Path(tempfile.mkdtemp(prefix="genloop-tracking-bench-"))
    proc, url = start_server(base)
    try:
        stores = {"sqlite": f"sqlite:///{base}/local/mlflow.db", "server": url,
                  **dict(item.split("=", 1) for item in args.extra)}
        (base / "local").mkdir()
        files = make_files(base)
        experiments = {name: experiment_for(uri, "bench", base / "local" / "artifacts") for name, uri in stores.items()}
        order = list(stores)
        fixed: dict[str, list[float]] = {n: [] for n in stores}
        epoch: dict[str, list[float]] = {n: [] for n in stores}
        batch: dict[str, list[float]] = {n: [] for n in stores}
        for r in range(args.runs):
            for name in (order if r % 2 == 0 else order[::-1]):
                f, e, b = one_run(stores[name], experiments[name], args.epochs, files)
                fixed[name].append(f)
                epoch[name].extend(e)
                batch[name].extend(b)
        loops: dict[str, list[dict[str, float]]] = {n: [] for n in stores}
        if args.loop_repeats:
            prepared = prepared_project(base)
            # warm-up, not counted: the first loop of a process pays the imports (torchmetrics, onnx, mlflow.onnx)
            tiny_loop(prepared, base / "warm-up", f"sqlite:///{base}/warm-up.db", TINY)
            for r in range(args.loop_repeats):
                for name in (order if r % 2 == 0 else order[::-1]):
                    loops[name].append(tiny_loop(prepared, base / f"loop-{name}-{r}", stores[name], overrides))
                    print(f"loop {name} #{r}: {loops[name][-1]}", flush=True)
    finally:
        stop_server(proc)
    if args.json:
        args.json.write_text(json.dumps({"epoch": epoch, "batch": batch, "fixed": fixed, "loops": loops, "stores": stores}, indent=1))
    med = statistics.median
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (1 min)")
    print("| store | log_batch per epoch, ms | ratio | + set_tag + 4 KB artifact, ms | ratio | per run (fixed), ms | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in stores:
        b, e, f = med(batch[name]), med(epoch[name]), med(fixed[name])
        print(f"| {name} | {b * 1000:.1f} | {b / med(batch['sqlite']):.2f}x | {e * 1000:.1f} | "
              f"{e / med(epoch['sqlite']):.2f}x | {f * 1000:.0f} | {f / med(fixed['sqlite']):.2f}x |")
    if args.loop_repeats:
        print(f"\nloop (training budgets x{args.loop_scale:g}; medians of {args.loop_repeats}):")
        print("| store | loop s | ratio | train / evaluate / export s | in MLflow calls s (train) | share | calls | epochs |")
        print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
        base_loop = med(t["loop"] for t in loops["sqlite"])
        for name in stores:
            runs = loops[name]
            loop = med(t["loop"] for t in runs)
            parts = " / ".join(f"{med(t[k] for t in runs):.1f}" for k in ("train", "evaluate", "export"))
            spent = med(t["mlflow"] for t in runs)
            print(f"| {name} | {loop:.1f} | {loop / base_loop:.2f}x | {parts} | {spent:.1f} "
                  f"({med(t['train_mlflow'] for t in runs):.1f}) | {med(t['mlflow'] / t['loop'] for t in runs):.0%} | "
                  f"{med(t['mlflow_calls'] for t in runs):.0f} | {runs[0]['epochs']} |")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
