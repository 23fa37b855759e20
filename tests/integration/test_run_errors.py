"""`genloop run` stopped by a user error (here a data set the validation refuses): one `error:` line
naming the setting to change, no Prefect tracebacks on the console, and the Prefect flow run still
recorded as Failed. A real `genloop run` subprocess with its own temporary Prefect server."""
from __future__ import annotations

import sqlite3
import subprocess

import pytest

from project_copy import TINY_PARAMS, copy_project, deep_update, project_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_a_run_refused_by_validation_prints_one_error_line_and_no_traceback_and_fails_the_flow_run(tmp_path):
    root = copy_project(tmp_path / "project", deep_update({}, TINY_PARAMS))
    env = {**project_env(root), "PREFECT_HOME": str(root / ".prefect")}
    env.pop("PREFECT_API_URL", None)  # its own temporary server, whose database we read afterwards
    proc = subprocess.run(["genloop", "-S", "clean.min_rows=100000", "run", "--source", "digits"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=500)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fewer than clean.min_rows=100000" in errors[0], output[-3000:]
    assert "-S clean.min_rows=" in errors[0]
    with sqlite3.connect(root / ".prefect" / "prefect.db") as db:
        states = dict(db.execute("select f.name, r.state_type from flow_run r join flow f on f.id = r.flow_id"))
    assert states == {"genloop-pipeline": "FAILED"}, states
