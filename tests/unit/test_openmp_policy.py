"""Every genloop process makes OpenMP's idle threads sleep (OMP_WAIT_POLICY=PASSIVE) unless its user chose a
policy: spinning threads took the cores of other trainings on the same machine. Fresh processes, since
OpenMP reads the variable once, when torch loads it."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

OPENMP_VARS = ("OMP_WAIT_POLICY", "OMP_DISPLAY_ENV", "GOMP_SPINCOUNT")


def fresh(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in OPENMP_VARS}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                          timeout=120, check=True)


def openmp_spin_count(stderr: str) -> str | None:
    """What libgomp (torch's OpenMP on Linux) reports under OMP_DISPLAY_ENV=VERBOSE: idle threads spin this
    many times before sleeping (0 under PASSIVE; 300000 by default); None for another OpenMP runtime."""
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", stderr)
    return found.group(1) if found else None


def test_importing_genloop_before_torch_makes_openmp_threads_sleep_at_once():
    done = fresh("import genloop.cli, os, torch; torch.ones(64, 64).sum(); print(os.environ['OMP_WAIT_POLICY'])",
                 OMP_DISPLAY_ENV="VERBOSE")
    assert done.stdout.strip() == "PASSIVE"
    assert openmp_spin_count(done.stderr) in ("0", None), done.stderr


def test_torch_imported_before_genloop_keeps_openmps_default_spinning():
    """Why the policy is set on importing genloop: OpenMP reads it once, when torch loads."""
    done = fresh("import torch, genloop", OMP_DISPLAY_ENV="VERBOSE")
    assert openmp_spin_count(done.stderr) in ("300000", None), done.stderr


def test_a_users_own_wait_policy_is_kept():
    done = fresh("import genloop, os, torch; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE",
                 OMP_DISPLAY_ENV="VERBOSE")
    assert done.stdout.strip() == "ACTIVE"
    assert openmp_spin_count(done.stderr) != "0", done.stderr


@pytest.mark.parametrize("module", ["flows.pipeline", "flows.sweep", "genloop.serving.command"])
def test_every_entry_point_sets_it_before_torch(module):
    done = fresh(f"import {module}, os; print(os.environ.get('OMP_WAIT_POLICY'))")
    assert done.stdout.strip() == "PASSIVE"


def test_torch_threads_default_to_the_cores_this_process_may_use():
    from genloop.config import TrainConfig, usable_cores

    assert TrainConfig(threads=3).torch_threads() == 3
    assert TrainConfig().torch_threads() == usable_cores() == len(os.sched_getaffinity(0))
