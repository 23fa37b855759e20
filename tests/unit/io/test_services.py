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
                                        "PREFECT_API_URL": "http://127.0.0.1:4250/api"}
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
