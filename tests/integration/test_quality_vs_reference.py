"""benchmarks/quality_vs_reference.py runs end to end in its tiny mode (1-second arms on 500 images)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MNIST = REPO.parent / "shared" / "data" / "mnist-t10k"
SCRIPT = REPO / "benchmarks" / "quality_vs_reference.py"
ARMS = {"dcgan_examples", "genloop_gan", "vae_examples", "genloop_vae"}

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist-t10k is missing")]


def test_tiny_benchmark_scores_all_four_arms_with_finite_fid(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--budgets", "1", "--data", str(MNIST), "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,  # a hang guard only
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())["results"]
    assert {r["arm"] for r in results} == ARMS and len(results) == 4
    for row in results:
        assert math.isfinite(row["scores"]["fid"]) and row["images_seen"] > 0, row
    by_arm = {r["arm"]: r for r in results}
    assert all(math.isfinite(by_arm[arm]["test_neg_elbo"]) for arm in ("genloop_vae", "vae_examples"))
    assert by_arm["genloop_gan"]["test_neg_elbo"] is None

    report = (out / "report.md").read_text()
    assert report.strip() in proc.stdout
    table_rows = [line for line in report.splitlines()
                  if line.startswith("| ") and ("genloop" in line or "examples" in line)]
    assert len(table_rows) == 4 + 2  # four arms, then the two genloop / reference ratio rows
    assert "real-vs-real floor" in report
    assert len(list((out / "grids").glob("1s_*.png"))) == 4
