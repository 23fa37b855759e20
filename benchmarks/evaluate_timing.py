"""Wall and CPU time of the evaluate stage (`genloop evaluate`, MLflow logging included) for two
versions of the code, run alternately so both see the same load.

    git archive HEAD src | tar -x -C /tmp/genloop-old      # the baseline code (git state untouched)
    .venv/bin/python benchmarks/evaluate_timing.py --baseline /tmp/genloop-old/src /tmp/proj-old \\
        --candidate src /tmp/proj-new --repeats 3

Each project holds the same trained models (outputs/train/{vae,gan}, copied) with their MLflow
store, and a params.yaml its code accepts.

Where the time goes on MNIST (10,000 images: 7,018 train, 2,982 held-out samples per model, 1,506
test; models trained 1 epoch), CPU seconds of one thread (`-S train.threads=1`) from a cProfile run
with a process-time clock, cold (no saved classifier), MLflow logging included; old code (before
fid_alt) and new in the same session on a heavily loaded machine (load average 9-25, so wall
clocks meant nothing: 990 s and 511 s):

| part | old | new |
| --- | ---: | ---: |
| whole stage | 127.7 | 98.9 (x0.77) |
| feature networks trained (CNN; new: + the MLP of fid_alt) | 50.7 | 58.2 |
| VAE IWAE NLL, 64 samples (old: all 1,506 test images; new: a seeded 500) | 44.1 | 14.3 (x0.32) |
| k-NN precision/recall/density/coverage, 3 sets (old: prdc; new: torch blocks, reference radii once) | 5.6 | 0.7 (x0.13) |
| KID (mostly the torchmetrics import) | 6.4 | 6.4 |
| embeddings / sampling / pixel nearest neighbours | 5.4 / 3.2 / 3.2 | 5.2 / 3.1 / 2.4 |
| MLflow logging / report | 5.1 / 1.4 | 4.7 / 1.4 |

The same figures before and after for fid, kid, precision, recall, density and coverage (4
digits); test_nll_iwae 210.48 (all) against 211.47 (the 500), the ELBO 220.10. With the feature
networks saved (every later evaluate on the same training split and settings) the new stage is
about 41 CPU s. Training the CNN is now the largest part of a cold run: `evaluate.classifier_epochs`
(15: held-out accuracy 0.969 on MNIST) trades it against accuracy.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_once(project: Path, src: Path) -> tuple[float, float]:
    """(wall s, user+sys CPU s) of one `genloop evaluate` in a fresh process importing ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "genloop.cli", "--root", str(project), "evaluate"], env=env,
                   check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, nargs=2, required=True, metavar=("SRC", "PROJECT"))
    parser.add_argument("--candidate", type=Path, nargs=2, required=True, metavar=("SRC", "PROJECT"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold", action="store_true",
                        help="delete the candidate's saved classifier before each run (the baseline always trains one)")
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {"baseline": [], "candidate": []}
    for i in range(args.repeats):
        for name in ("baseline", "candidate"):
            src, project = getattr(args, name)
            if args.cold:
                (project / "outputs" / "evaluate" / "classifier.pt").unlink(missing_ok=True)
            times[name].append(run_once(project, src))
            print(f"run {i + 1} {name}: wall {times[name][-1][0]:.1f} s, cpu {times[name][-1][1]:.1f} s", flush=True)
    for name, rows in times.items():
        print(f"{name}: median wall {statistics.median(r[0] for r in rows):.1f} s, "
              f"median cpu {statistics.median(r[1] for r in rows):.1f} s over {len(rows)} runs")
    median = {name: [statistics.median(r[i] for r in rows) for i in (0, 1)] for name, rows in times.items()}
    ratio_wall = median["candidate"][0] / median["baseline"][0]
    ratio_cpu = median["candidate"][1] / median["baseline"][1]
    print(f"candidate / baseline: wall x{ratio_wall:.2f}, cpu x{ratio_cpu:.2f}")


if __name__ == "__main__":
    main()
