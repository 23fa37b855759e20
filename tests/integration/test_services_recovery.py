"""Team services (genloop.io.services) on a real PostgreSQL cluster and real MLflow and Prefect servers: two
`genloop services up` at once, a damaged state.json, and a state.json and password file lost while everything
runs. One test (each `up` starts servers: about 20-40 s), in a throwaway hub folder."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from genloop.io.lock import pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

GENLOOP = str(Path(sys.executable).with_name("genloop"))


def genloop(hub: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([GENLOOP, "--root", str(hub), "services", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def all_stopped(pids, timeout: float = 30.0) -> bool:
    """Every pid has exited (a zombie left to an init that does not reap counts as exited), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while any(pid_alive(int(pid)) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def finished(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def serving(hub: Path) -> dict[str, int]:
    """The recorded servers, checked: alive, the only servers of the hub in the process table, healthy."""
    from genloop.io import services

    layout = services.ServicesLayout.of(hub)
    state = json.loads(layout.state.read_text())
    leaders = {pid for pid in services._found_servers(layout) if os.getpgid(pid) == pid}
    assert leaders == set(state["pids"].values()), (leaders, state)
    with urllib.request.urlopen(f"http://127.0.0.1:{state['ports']['mlflow']}/health", timeout=10) as resp:
        assert resp.status == 200
    return state["pids"]


def test_services_survive_two_ups_at_once_a_damaged_state_and_a_lost_state_and_password(genloop_mlflow_env):
    from genloop.io import services

    try:
        bin_dir = services.ensure_postgres()
    except services.ServicesError as exc:
        pytest.skip(f"PostgreSQL is not installed and cannot be installed here: {exc}")
    hub = Path(tempfile.mkdtemp(prefix="genloop-services-"))
    hub.chmod(0o755)  # run as root, PostgreSQL runs as the postgres user, which must reach hub/.services/pg
    layout = services.ServicesLayout.of(hub)
    try:
        # Two `up` at once on a fresh clone: one waits for the other; the recorded PIDs are the servers that serve.
        results = [finished(proc) for proc in [genloop(hub, "up"), genloop(hub, "up")]]
        assert all(code == 0 and "Traceback" not in text for code, text in results), results
        first = serving(hub)
        for secret in (layout.state, layout.credentials):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        assert "password" not in layout.state.read_text()

        # A damaged state.json: status says so in one line; down stops everything without it.
        layout.state.write_text('{"ports": {')
        code, text = finished(genloop(hub, "status"))
        assert code == 1 and text.strip().startswith("error:") and "state.json is damaged" in text, text
        code, text = finished(genloop(hub, "down"))
        assert code == 0 and "stopped: mlflow, prefect, postgres" in text, text
        assert services._found_servers(layout) == {} and not services._postgres_running(bin_dir, layout)
        assert all_stopped(first.values())

        # up again: the kept password still opens the cluster.
        code, text = finished(genloop(hub, "up"))
        assert code == 0, text
        second = serving(hub)

        # state.json and the password file lost while everything runs: up stops the unrecorded servers, sets a
        # new password on the cluster, and starts servers that reach their databases with it.
        layout.state.unlink()
        layout.credentials.unlink()
        code, text = finished(genloop(hub, "up"))
        assert code == 0 and "setting a new database password" in text, text
        third = serving(hub)
        assert not set(third.values()) & set(second.values())
        assert all_stopped(second.values())
        import psycopg

        port = json.loads(layout.state.read_text())["ports"]["postgres"]
        with psycopg.connect(f"host=127.0.0.1 port={port} user=genloop dbname=mlflow",
                             password=layout.credentials.read_text().strip(), connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        services.down(hub)
        shutil.rmtree(hub, ignore_errors=True)
