"""What the tools' UIs show: headline figures read from either metrics.json layout, the Prefect
artifacts' content, MLflow parent-run metrics and names, lean registry tags (fast: no Prefect server)."""
from __future__ import annotations

import json
import logging
import time

import pytest

from genloop.core import headline
from genloop.pipeline import prefect_artifacts
from genloop.io import tracking
from genloop.config import MlflowConfig
from genloop.paths import ProjectPaths

PER_MODEL = {
    "vae": {"fid": 3.0, "kid_mean": 0.1, "fid_real_floor": 0.5, "test_nll_iwae": 40.0},
    "gan": {"fid": 2.0, "kid_mean": 0.2, "fid_real_floor": 0.5},
    "real_floor": {"fid": 0.5, "kid_mean": 0.0},
    "classifier": {"held_out_accuracy": 0.9},
    "samples_per_model": 100,
}


def test_headline_reads_the_per_model_layout_without_the_detail():
    figures = headline.headline(PER_MODEL)
    assert figures["vae"] == {"fid": 3.0, "kid_mean": 0.1, "test_nll_iwae": 40.0}
    assert figures["gan"] == {"fid": 2.0, "kid_mean": 0.2}
    assert figures["real_floor"] == {"fid": 0.5, "kid_mean": 0.0}


def test_headline_reads_a_flat_layout_and_leaves_missing_values_out():
    figures = headline.headline({"vae_fid": 3.0, "gan_fid": 2.5, "real_floor_fid": 0.4,
                                 "vae_recognisable_share": 0.7, "note": "text"})
    assert figures["vae"] == {"fid": 3.0, "recognisable_share": 0.7}
    assert figures["gan"] == {"fid": 2.5}
    assert figures["real_floor"] == {"fid": 0.4}


def test_headline_of_a_missing_or_broken_report_is_empty(tmp_path):
    assert headline.read(tmp_path / "missing.json") == {"vae": {}, "gan": {}, "real_floor": {}}
    (tmp_path / "bad.json").write_text("[1, 2")
    assert headline.read(tmp_path / "bad.json") == {"vae": {}, "gan": {}, "real_floor": {}}


def test_metrics_table_has_a_row_per_metric_with_blanks_for_missing_values():
    rows = prefect_artifacts.metrics_table(headline.headline(PER_MODEL))
    by_metric = {r["metric"]: r for r in rows}
    assert by_metric["fid"] == {"metric": "fid", "vae": 3.0, "gan": 2.0, "real floor": 0.5}
    assert by_metric["test_nll_iwae"]["gan"] is None and by_metric["test_nll_iwae"]["real floor"] is None


def test_promotion_markdown_names_each_model_and_its_decision():
    text = prefect_artifacts.promotion_markdown({
        "vae": {"registered": "genloop-vae v3", "promotion": "genloop-vae v3 not promoted: fid 5 > 4"},
        "gan": {"registered": None, "promotion": None},
    })
    assert "**VAE** (genloop-vae v3): genloop-vae v3 not promoted: fid 5 > 4" in text
    assert "**GAN** (not registered): no promotion decision" in text


def test_mlflow_links_open_the_classic_run_page():
    assert prefect_artifacts.mlflow_run_url("7", "abc") == "http://127.0.0.1:5000/#/experiments/7/runs/abc"


def test_route_genloop_logs_gives_genloop_records_the_prefect_run_handlers():
    extra = logging.getLogger("prefect.extra")
    marker = logging.NullHandler()
    extra.addHandler(marker)
    logger = logging.getLogger("genloop")
    level = logger.level
    try:
        prefect_artifacts.route_genloop_logs()
        prefect_artifacts.route_genloop_logs()  # idempotent
        assert logger.handlers.count(marker) == 1
        assert logging.getLogger("genloop.stages.train").getEffectiveLevel() <= logging.INFO
    finally:
        extra.removeHandler(marker)
        logger.removeHandler(marker)
        logger.setLevel(level)


@pytest.mark.parametrize("environ, name", [
    ({"DVC_EXP_NAME": "lunar-dace"}, "dvc-exp lunar-dace"),
    ({}, "dvc-repro 0123456"),
])
def test_dvc_parent_runs_are_named_after_the_experiment_or_the_commit(environ, name):
    assert tracking.dvc_run_name("0123456789abcdef", environ) == name


def test_version_tags_keep_lineage_and_headline_metrics_not_the_params():
    tags = {"run_id": "r", "dvc_data_hash": "h", "git_commit": "c", "params": "{...}", "parity_passed": "true",
            "metric.fid": "1.0", "metric.kid_std": "0.1", "metric.is_mean": "2.0", "promotion.decision": "kept"}
    kept = tracking.version_tags(tags, keep_metrics=["is_mean"])
    assert "params" not in kept and "metric.kid_std" not in kept
    assert {"run_id", "dvc_data_hash", "git_commit", "parity_passed", "metric.fid", "metric.is_mean",
            "promotion.decision"} <= set(kept)


@pytest.fixture
def store(tmp_path, genloop_mlflow_env):
    paths = ProjectPaths.at(tmp_path)
    config = MlflowConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "artifacts"))
    return paths, config, tracking.setup(config, paths)


def test_parent_run_carries_both_models_headline_metrics(store, tmp_path):
    from mlflow import MlflowClient

    paths, config, _ = store
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    paths.metrics.write_text(json.dumps(PER_MODEL))
    run_id = tracking.start_parent_run(config, paths, runner="prefect", run_name="prefect-test")
    tracking.log_parent_metrics(run_id, paths.metrics)
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["vae_fid"] == 3.0 and metrics["gan_fid"] == 2.0 and metrics["real_floor_fid"] == 0.5
    assert "vae_fid_real_floor" not in metrics


def test_a_parent_with_every_stage_skipped_says_so_in_name_and_description(store):
    from mlflow import MlflowClient

    paths, config, _ = store
    run_id = tracking.start_parent_run(config, paths, runner="prefect", run_name="prefect-quiet-fox")
    name = tracking.mark_all_skipped(run_id, "prefect-quiet-fox", {"vae": "v1", "gan": "g1"})
    run = MlflowClient().get_run(run_id)
    assert name == run.info.run_name == "prefect-quiet-fox (all stages skipped)"
    assert "every stage was skipped" in run.data.tags["mlflow.note.content"]
    assert "vae: v1" in run.data.tags["mlflow.note.content"]


def test_logging_onto_a_finished_run_keeps_its_end_time(store):
    import mlflow
    from mlflow import MlflowClient

    paths, config, experiment_id = store
    client = MlflowClient()
    run_id = client.create_run(experiment_id).info.run_id
    client.set_terminated(run_id, "FINISHED")
    ended = client.get_run(run_id).info.end_time
    time.sleep(0.05)
    with tracking.reopened_run(run_id):
        mlflow.log_metric("onnx_max_abs_diff", 1e-7)
    info = client.get_run(run_id).info
    assert (info.status, info.end_time) == ("FINISHED", ended)


def test_model_details_put_params_in_a_file_and_metrics_on_the_logged_model(store):
    import mlflow
    from mlflow import MlflowClient

    paths, config, experiment_id = store
    client = MlflowClient()
    run_id = client.create_run(experiment_id).info.run_id
    model = mlflow.initialize_logged_model(name="onnx", source_run_id=run_id, experiment_id=experiment_id)
    tracking.log_model_details(run_id, model.model_id, {"train": {"vae": {"epochs": 3}}}, {"fid": 2.5})
    assert {m.key: m.value for m in mlflow.get_logged_model(model.model_id).metrics} == {"fid": 2.5}
    params_file = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="params.json",
                                                      dst_path=str(paths.root / "dl"))
    assert json.loads(open(params_file).read())["train"]["vae"]["epochs"] == 3


def test_flow_runs_print_genloop_lines_once_not_through_both_handlers():
    import logging

    from genloop.pipeline.prefect_artifacts import route_genloop_logs

    logger = logging.getLogger("genloop")
    cli_handler = logging.StreamHandler()
    cli_handler.set_name("genloop-cli")
    logger.addHandler(cli_handler)
    try:
        route_genloop_logs()
        assert cli_handler not in logger.handlers
    finally:
        logger.removeHandler(cli_handler)


def test_a_crash_inside_failed_on_error_ends_the_run_failed_and_propagates(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from genloop.io import tracking

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        client = MlflowClient()
        run_id = client.create_run(client.create_experiment("crash", artifact_location=str(tmp_path / "a"))).info.run_id
        with pytest.raises(KeyboardInterrupt):
            with tracking.failed_on_error(run_id):
                raise KeyboardInterrupt
        assert client.get_run(run_id).info.status == "FAILED"
        client.update_run(run_id, status="RUNNING")
        with tracking.failed_on_error(run_id):
            pass
        assert client.get_run(run_id).info.status == "RUNNING"  # a clean exit leaves the status to the block
    finally:
        mlflow.set_tracking_uri(previous)


def test_child_run_names_tell_model_data_and_time_apart(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    paths.data_dvc.write_text("outs:\n- md5: f31143fd7e1bfffd134eb7119c57cf63.dir\n  path: data\n")
    first = tracking.child_run_name("vae", paths, now=0.0)
    assert first.startswith("vae f31143f ")
    assert first != tracking.child_run_name("vae", paths, now=61.0) != tracking.child_run_name("gan", paths, now=61.0)


def test_the_dvc_routes_parent_run_carries_the_headline_metrics(store):
    """`genloop evaluate` under `dvc repro` records through the flow's hook, onto the DVC parent run."""
    from mlflow import MlflowClient

    from genloop.config import Params
    from genloop.pipeline.recording import record_stage

    paths, config, _ = store
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    paths.metrics.write_text(json.dumps(PER_MODEL))
    run_id, logged = record_stage("evaluate", None, Params(mlflow=config), paths)
    run = MlflowClient().get_run(run_id)
    assert run.data.tags[tracking.RUNNER_TAG] == "dvc" and run.info.run_name.startswith("dvc-repro ")
    assert run.data.metrics["vae_fid"] == 3.0 and run.data.metrics["gan_fid"] == 2.0
    assert "vae_fid" in logged
