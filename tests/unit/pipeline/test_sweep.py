"""Sweeps: expansion of sweep.space, and a real 4-trial sweep on a 2-worker Dask LocalCluster."""
from __future__ import annotations

import shutil

import pytest

from genloop.config import ConfigError, SweepConfig, load_params
from flows.sweep import sweep as sweep_flow
from genloop.pipeline.trials import Trial, check_space, expand, models_for, trial_params

from conftest import GENLOOP_TINY_OVERRIDES


def test_grid_is_the_product_of_the_lists_and_ranges():
    config = SweepConfig(space={"train.vae.beta": [0.5, 1.0], "train.vae.lr": {"low": 1e-4, "high": 1e-2, "log": True,
                                                                                "num": 3}})
    trials = expand(config)
    assert [t.index for t in trials] == list(range(6))
    assert {t.values["train.vae.beta"] for t in trials} == {0.5, 1.0}
    assert sorted({t.values["train.vae.lr"] for t in trials}) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert len(expand(config.model_copy(update={"n_trials": 4}))) == 4


def test_random_draws_are_seeded_and_stay_in_range():
    config = SweepConfig(method="random", n_trials=8, seed=3, space={
        "train.vae.latent_dim": {"low": 2, "high": 32, "integer": True},
        "train.gan.lr_g": {"low": 1e-5, "high": 1e-3, "log": True}, "train.vae.beta": [0.5, 1.0, 2.0]})
    trials = expand(config)
    assert trials == expand(config)
    assert trials != expand(config.model_copy(update={"seed": 4}))
    for t in trials:
        assert isinstance(t.values["train.vae.latent_dim"], int) and 2 <= t.values["train.vae.latent_dim"] <= 32
        assert 1e-5 <= t.values["train.gan.lr_g"] <= 1e-3
        assert t.values["train.vae.beta"] in (0.5, 1.0, 2.0)


@pytest.mark.parametrize("spec, message", [
    ({"method": "random", "space": {"train.vae.beta": [1.0]}}, "needs sweep.n_trials"),
    ({"space": {"train.vae.lr": {"low": 1e-4, "high": 1e-2}}}, "needs num"),
    ({"space": {"train.vae.lr": {"low": 1e-2, "high": 1e-4, "num": 2}}}, "exceeds high"),
    ({"metric": "fid"}, "MODEL.METRIC"),
    ({"space": {}}, "sweep.space is empty"),
])
def test_bad_sweep_specs_name_the_problem(tmp_path, spec, message):
    import yaml

    file = tmp_path / "params.yaml"
    file.write_text(yaml.safe_dump({"sweep": spec}))
    with pytest.raises(ConfigError, match=message):
        load_params(file)


def test_a_sweep_may_not_vary_shared_stages():
    with pytest.raises(ConfigError, match="sweep.space.clean.min_rows"):
        check_space(SweepConfig(space={"clean.min_rows": [10, 20]}))


def test_a_bad_trial_value_fails_before_any_trial_runs(tmp_path):
    with pytest.raises(ConfigError, match="train.vae.latent_dim"):
        trial_params(tmp_path / "params.yaml", None, Trial(0, {"train.vae.latent_dim": 0}), tmp_path)


def test_trials_train_only_the_models_they_change():
    assert models_for({"train.vae.beta": 1.0}, "vae.fid") == ("vae",)
    assert models_for({"train.gan.lr_g": 1e-4}, "vae.fid") == ("vae", "gan")
    assert models_for({"seed": 1}, "gan.fid") == ("vae", "gan")


# ---- a real sweep ------------------------------------------------------------------------------

SPACE = {"train.vae.latent_dim": [4, 8], "train.vae.beta": [0.5, 1.0]}


@pytest.fixture(scope="module")
def swept(genloop_prepared_data, tmp_path_factory, prefect_harness, genloop_mlflow_env):
    root = tmp_path_factory.mktemp("swept")
    for rel in ("outputs/clean", "outputs/augment"):
        shutil.copytree(genloop_prepared_data / rel, root / rel)
    overrides = {**GENLOOP_TINY_OVERRIDES, "train.vae.images": 1200, "evaluate.classifier_epochs": 1,
                 "mlflow.tracking_uri": f"sqlite:///{root}/mlflow/mlflow.db",
                 "mlflow.artifact_root": str(root / "mlflow" / "artifacts")}
    result = sweep_flow(project_root=str(root), overrides=overrides, space=SPACE, method="grid", workers=2)
    return root, result


@pytest.mark.integration  # a Prefect server and a 2-worker Dask cluster
def test_sweep_runs_every_configuration_across_two_worker_processes(swept):
    _, result = swept
    assert sorted((t["values"]["train.vae.latent_dim"], t["values"]["train.vae.beta"]) for t in result["trials"]) == \
        [(4, 0.5), (4, 1.0), (8, 0.5), (8, 1.0)]
    assert len({t["pid"] for t in result["trials"]}) == 2  # both Dask workers did trials
    assert result["failed"] == []


@pytest.mark.integration  # a Prefect server and a 2-worker Dask cluster
def test_each_trial_is_one_child_run_of_one_sweep_parent(swept):
    from mlflow import MlflowClient

    root, result = swept
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow/mlflow.db")
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["genloop.runner"] == "prefect-sweep"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4
    assert {c.info.run_id for c in children} == {t["run_id"] for t in result["trials"]}
    for child in children:  # the VAE it trained is nested one level further down
        assert child.info.status == "FINISHED"
        assert "vae.fid" in child.data.metrics
        models = client.search_runs([parent.info.experiment_id],
                                    filter_string=f"tags.`mlflow.parentRunId` = '{child.info.run_id}'")
        assert [m.data.tags["genloop.model"] for m in models] == ["vae"]


@pytest.mark.integration  # a Prefect server and a 2-worker Dask cluster
def test_the_best_trial_is_tagged_on_the_child_and_the_parent(swept):
    import json

    from mlflow import MlflowClient

    root, result = swept
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow/mlflow.db")
    scores = {t["run_id"]: t["score"] for t in result["trials"]}
    best = min(scores, key=scores.get)
    assert result["best_run_id"] == best
    tags = {run_id: client.get_run(run_id).data.tags["genloop.sweep_best"] for run_id in scores}
    assert [r for r, v in tags.items() if v == "true"] == [best]
    parent = client.get_run(result["parent_run_id"])
    assert parent.data.tags["genloop.sweep_best_run_id"] == best
    assert json.loads(parent.data.tags["genloop.sweep_best_params"]) == result["best_params"]
    assert parent.data.metrics["best_vae_fid"] == pytest.approx(scores[best])


@pytest.mark.integration  # a Prefect server and a 2-worker Dask cluster
def test_trials_leave_the_project_outputs_alone(swept):
    root, result = swept
    assert not (root / "outputs" / "train").exists()
    assert list((root / "outputs" / "sweeps").iterdir()) == []
    assert all(line.split()[0].isdigit() for line in result["table"].splitlines()[2:])


@pytest.mark.parametrize("space, field", [("train.vae.beta=", "sweep.space.train.vae.beta"),
                                          ("clean.min_rows=[1, 2]", "sweep.space.clean.min_rows")])
def test_genloop_sweep_rejects_a_bad_space_before_starting_anything(tmp_path, space, field):
    from click.testing import CliRunner

    from genloop.cli import main

    result = CliRunner().invoke(main, ["--root", str(tmp_path), "sweep", "--space", space])
    assert result.exit_code == 1
    assert field in result.output
    assert not (tmp_path / "outputs").exists()
