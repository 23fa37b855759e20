"""Team mode without servers: which tracking URI wins, ports, team.env, and the messages a user sees
when a tracking server is not there. The services themselves run in test_team_mode.py."""
from __future__ import annotations

import socket

import pytest

from genloop.io import services, tracking
from genloop.config import MlflowConfig
from genloop.evaluation.summary import where_tracked


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_mlflow_tracking_uri_in_the_environment_wins_over_params(tmp_path):
    config = MlflowConfig()
    assert tracking.tracking_uri(config, tmp_path, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5050"}) \
        == "http://127.0.0.1:5050"
    assert tracking.tracking_uri(config, tmp_path, {}) == f"sqlite:///{(tmp_path / 'mlflow' / 'mlflow.db').resolve()}"
    server_in_params = MlflowConfig(tracking_uri="http://mlflow.example:5000")
    assert tracking.tracking_uri(server_in_params, tmp_path, {}) == "http://mlflow.example:5000"
    assert tracking.is_server("https://mlflow.example") and not tracking.is_server("sqlite:///x.db")


def test_a_local_store_in_mlflow_tracking_uri_does_not_override_params(tmp_path):
    """mlflow.set_tracking_uri writes the variable itself: another project's store must not leak in."""
    config = MlflowConfig(tracking_uri=f"sqlite:///{tmp_path}/mine.db")
    assert tracking.tracking_uri(config, tmp_path, {"MLFLOW_TRACKING_URI": "sqlite:////elsewhere/other.db"}) \
        == f"sqlite:///{tmp_path}/mine.db"


def test_recorded_ports_are_kept_and_a_taken_one_is_replaced():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        free = closed_port()
        ports = services._choose_ports({"ports": {"postgres": taken, "mlflow": free, "prefect": taken}},
                                       running={"prefect"})
    assert ports["postgres"] != taken  # someone else's now: moved
    assert ports["mlflow"] == free  # still free: kept, so team.env's URLs stay the same
    assert ports["prefect"] == taken  # our own running server holds it
    assert len({ports["postgres"], ports["mlflow"]}) == 2


def test_team_env_points_clients_at_both_servers():
    state = {"ports": {"postgres": 55432, "mlflow": 5050, "prefect": 4250}, "password": "pw"}
    assert services.team_env(state) == {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5050",
                                        "PREFECT_API_URL": "http://127.0.0.1:4250/api",
                                        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
                                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    assert services.database_url(state, "prefect", "asyncpg") \
        == "postgresql+asyncpg://genloop:pw@127.0.0.1:55432/prefect"


def test_down_and_status_on_a_project_that_never_started_services(tmp_path):
    assert services.down(tmp_path) == []
    assert set(services.status(tmp_path).values()) == {"never started"}
    assert not (tmp_path / ".services" / "team.env").exists()


def test_a_tracking_server_that_does_not_answer_gives_one_line_naming_it(monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(Exception) as caught:
        MlflowClient(tracking_uri=uri).search_experiments()
    message = services.unreachable_tracking_server(caught.value)
    assert message is not None and f"MLflow tracking server {uri} stopped answering" in message
    assert services.unreachable_tracking_server(ValueError("API request to http://x failed: bad JSON")) is None


def test_a_tracking_server_whose_postgresql_is_down_gives_one_line_naming_postgresql(monkeypatch):
    """What MLflow's server answers to every call while its PostgreSQL is stopped: 503 with the driver's error."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mlflow import MlflowClient

    body = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": (
        '(psycopg.OperationalError) connection failed: connection to server at "127.0.0.1", port 55432 failed: '
        "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?")}).encode()

    class DatabaseDown(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's names)
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), DatabaseDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(Exception) as caught:
            MlflowClient(tracking_uri=uri).search_experiments()
        message = services.unreachable_tracking_server(caught.value)
    finally:
        server.shutdown()
        server.server_close()
    assert message is not None and f"MLflow tracking server {uri} answers" in message, message
    assert "its database (PostgreSQL on 127.0.0.1:55432) is not running" in message and "stopped answering" not in message


def test_serving_champions_from_a_server_that_is_down_fails_at_once(monkeypatch, tmp_path):
    from genloop.serving.registry import has_champions
    from genloop.serving.settings import ServingError

    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ServingError, match=f"tracking server {uri} does not answer"):
        has_champions(MlflowConfig(), tmp_path, ["genloop-vae"])


def test_the_run_summary_names_the_tracking_server_instead_of_the_local_store(tmp_path):
    from genloop.paths import ProjectPaths

    paths = ProjectPaths.at(tmp_path)
    result = {"parent_run_id": "abc"}
    assert where_tracked(result, paths, "http://127.0.0.1:5050")[0].startswith("MLflow tracking server: http://")
    assert "mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db" in " ".join(where_tracked(result, paths, None))


# ---- a damaged state.json, found processes, permissions --------------------------------------------

@pytest.mark.parametrize("text,why", [('{"ports": {', "Expecting"), ('[]', "Input should be"),
                                      ('{"ports": {"postgres": "x", "mlflow": 1, "prefect": 2}}', "ports.postgres"),
                                      ('{"pids": {"mlflow": [1]}}', "pids.mlflow"), ('{"port": {}}', "port")])
def test_a_damaged_state_file_is_one_error_naming_it_and_down_still_works(tmp_path, text, why):
    layout = services.ServicesLayout.of(tmp_path)
    layout.root.mkdir()
    layout.state.write_text(text)
    with pytest.raises(services.DamagedStateError, match=rf"state\.json is damaged \(.*{why}.*`genloop services down`"):
        services.status(tmp_path)
    assert services.down(tmp_path) == []
    assert not layout.state.exists() and len(list(layout.root.glob("state.json.damaged-*"))) == 1
    assert set(services.status(tmp_path).values()) == {"never started"}


def test_down_stops_this_projects_servers_from_the_process_table_without_a_state_file(tmp_path):
    import os
    import subprocess
    import sys

    layout = services.ServicesLayout.of(tmp_path)
    layout.root.mkdir()
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); " \
           "time.sleep(600)"  # a server and its worker, in a session of their own, as up starts them
    ours = subprocess.Popen([sys.executable, "-c", code, "mlflow"], start_new_session=True,
                            env={**os.environ, services.MARKER: str(layout.root)})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "mlflow"], start_new_session=True,
                             env={**os.environ, services.MARKER: str(tmp_path / "elsewhere" / ".services")})
    try:
        deadline = __import__("time").monotonic() + 20
        while len(services._found_servers(layout)) < 2 and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.1)
        found = services._found_servers(layout)
        assert ours.pid in found and len(found) == 2 and other.pid not in found
        layout.state.write_text('{"ports": {')  # lost track of them
        assert services.down(tmp_path) == ["mlflow"]
        assert ours.wait(timeout=30) is not None and services._found_servers(layout) == {}
        assert other.poll() is None  # another project's server is left alone
    finally:
        for proc in (ours, other):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_state_file_is_never_readable_by_others_and_holds_no_password(tmp_path):
    import stat

    from genloop.io import atomic

    target = tmp_path / "state.json"
    with atomic.atomic_path(target, 0o600) as tmp:
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o600  # from creation, not after the rename
        tmp.write_text("{}")
    layout = services.ServicesLayout.of(tmp_path)
    services._write_state(layout, {"ports": {"postgres": 1, "mlflow": 2, "prefect": 3}, "pids": {}, "password": "pw"})
    assert stat.S_IMODE(layout.state.stat().st_mode) == 0o600
    assert "pw" not in layout.state.read_text()


def test_an_earlier_state_files_password_moves_to_the_credentials_file(tmp_path):
    import stat

    layout = services.ServicesLayout.of(tmp_path)
    layout.root.mkdir()
    layout.state.write_text('{"password": "old-pw", "pids": {}, "ports": {"postgres": 1, "mlflow": 2, "prefect": 3}}')
    state = services._read_state(layout)
    assert services._password(layout, state, tmp_path) == "old-pw"  # no cluster: nothing to reset
    assert layout.credentials.read_text().strip() == "old-pw"
    assert stat.S_IMODE(layout.credentials.stat().st_mode) == 0o600
    assert services._password(layout, {}, tmp_path) == "old-pw"  # the file wins from now on


def test_runuser_is_found_in_sbin_when_a_root_shells_path_lacks_it(monkeypatch):
    import os

    from genloop.io import services

    sbin = next((p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), None)
    if sbin is None:
        pytest.skip("no runuser in /usr/sbin or /sbin on this machine")
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")  # what `env -i PATH=...` gives a root shell
    found = services._runuser()
    assert os.path.isabs(found) and os.path.basename(found) == "runuser" and os.access(found, os.X_OK)
