"""`dvc repro` in a copy of the repository: all stages, a quick no-op, only what a param touches,
experiments, and the metrics and plots DVC shows."""
from __future__ import annotations

import json
import os
import resource
import time

import pytest
import yaml

from genloop.io.dvcio import run_dvc

from project_copy import REPO_ROOT, clone_workspace, project_env, ran_stages, reproduce

pytestmark = pytest.mark.integration

ALL_STAGES = {"clean", "augment", "train_vae", "train_gan", "evaluate", "export"}
NO_OP_REPRO_LIMIT_S = 5.0


def dvc(root, *args: str) -> str:
    proc = run_dvc(list(args), cwd=root, env=project_env(root))
    return proc.stdout + proc.stderr


@pytest.fixture
def workspace(genloop_reproduced, tmp_path):
    """A private copy of the reproduced project, free to change."""
    return clone_workspace(genloop_reproduced.root, tmp_path / "repo")


def test_first_repro_runs_every_stage(genloop_reproduced):
    root = genloop_reproduced.root
    assert ran_stages(genloop_reproduced.first_repro) == ALL_STAGES
    assert (root / "reports" / "metrics.json").exists()
    assert (root / "models" / "vae_decoder.onnx").exists()


def test_second_repro_with_nothing_changed_is_a_quick_no_op(genloop_reproduced):
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = reproduce(genloop_reproduced.root)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    assert ran_stages(out) == set()
    assert "up to date" in out
    # The work DVC does (about 1 s here) must fit the limit; the wall clock too, allowing for a machine
    # whose cores are shared by more runnable processes than it has (load average / cores).
    oversubscribed = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    assert cpu <= NO_OP_REPRO_LIMIT_S, f"no-op dvc repro used {cpu:.1f} s of CPU"
    assert wall <= NO_OP_REPRO_LIMIT_S * oversubscribed, f"no-op dvc repro took {wall:.1f} s"


def test_changing_a_gan_parameter_reruns_only_what_depends_on_it(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"]["gan"]["images"] = 2000
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(reproduce(workspace)) == {"train_gan", "evaluate", "export"}


def test_collecting_the_embedded_source_again_keeps_the_committed_hash(genloop_reproduced):
    assert (genloop_reproduced.root / "data.dvc").read_text() == (REPO_ROOT / "data.dvc").read_text()


def test_metrics_show_lists_the_reports_and_the_atlas_as_flat_numbers(genloop_reproduced):
    shown = json.loads(dvc(genloop_reproduced.root, "metrics", "show", "--json"))
    reports = shown[""]["data"]
    assert set(reports) == {"reports/metrics.json", "reports/validation.json", "reports/explain.json"}
    explain = reports["reports/explain.json"]["data"]
    assert 0 <= explain["vae"]["mig"] <= 1 and explain["vae"]["active_units"] <= explain["vae"]["latent_dim"]
    validation = reports["reports/validation.json"]["data"]
    assert validation["passed"] == validation["checked"] > 0
    metrics = reports["reports/metrics.json"]["data"]
    written = json.loads((genloop_reproduced.root / "reports" / "metrics.json").read_text())
    for model in ("vae", "gan"):  # what DVC shows is the file's figure, and a generator scores above real data
        assert metrics[model]["fid"] == written[model]["fid"]
        assert 0 <= metrics["real_floor"]["fid"] < metrics[model]["fid"]
    table = dvc(genloop_reproduced.root, "metrics", "show", "reports/metrics.json")
    assert "vae.fid" in table and "gan.fid" in table and "real_floor.fid" in table


def test_plots_show_writes_html_naming_both_histories(genloop_reproduced, tmp_path):
    out = dvc(genloop_reproduced.root, "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "index.html" in out
    # One Vega spec per history.csv, with the titles and columns dvc.yaml names.
    for name in ("outputs_train_vae_history_csv", "outputs_train_gan_history_csv", "VAE loss", "GAN losses",
                 "val_loss", "g_loss"):
        assert name in html


def experiment_rows(root) -> dict[str, dict]:
    rows = json.loads(dvc(root, "exp", "show", "--json"))
    return {exp["name"]: exp for row in rows for ex in (row.get("experiments") or []) for exp in ex["revs"]}


def test_readme_experiment_story_works_without_a_committed_dvc_lock(workspace):
    """The DVC route (docs/dvc.md) on a fresh clone: dvc.lock (written by the first `dvc repro`) is not in git,
    the baseline is saved as an experiment, and metrics diff / exp show compare against it."""
    from project_copy import git

    git(workspace, "rm", "-q", "--cached", "dvc.lock")
    git(workspace, "commit", "-q", "-m", "as the repository ships: no dvc.lock")
    assert (workspace / "dvc.lock").exists() and git(workspace, "ls-files", "dvc.lock") == ""

    dvc(workspace, "exp", "save", "-n", "baseline")
    out = dvc(workspace, "exp", "run", "-n", "vae-lr", "-S", "train.vae.lr=0.002")
    assert ran_stages(out) == {"train_vae", "evaluate", "export"}
    # DVC runs experiments in the workspace: the value stays in params.yaml afterwards.
    assert yaml.safe_load((workspace / "params.yaml").read_text())["train"]["vae"]["lr"] == 0.002

    experiments = experiment_rows(workspace)
    assert {"baseline", "vae-lr"} <= set(experiments)
    for name, lr in (("baseline", 0.001), ("vae-lr", 0.002)):
        data = experiments[name]["data"]
        assert data["params"]["params.yaml"]["data"]["train"]["vae"]["lr"] == lr
    shown = {name: experiments[name]["data"]["metrics"]["reports/metrics.json"]["data"] for name in ("baseline", "vae-lr")}
    # vae-lr ran last, in the workspace: exp show reports what its evaluate wrote.
    written = json.loads((workspace / "reports" / "metrics.json").read_text())
    assert shown["vae-lr"]["vae"]["fid"] == pytest.approx(written["vae"]["fid"])
    assert shown["baseline"]["vae"]["fid"] != pytest.approx(shown["vae-lr"]["vae"]["fid"])  # another lr, another VAE
    assert shown["baseline"]["gan"]["fid"] == pytest.approx(shown["vae-lr"]["gan"]["fid"])  # the same GAN

    proc = run_dvc(["metrics", "diff", "baseline"], cwd=workspace, env=project_env(workspace), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "vae.fid" in proc.stdout and "failed to load" not in proc.stdout + proc.stderr
    diff = json.loads(dvc(workspace, "metrics", "diff", "baseline", "--json"))["reports/metrics.json"]
    assert "vae.fid" in diff  # the VAE changed ...
    assert "gan.fid" not in diff  # ... the GAN (and its score) did not
    assert diff["vae.fid"]["old"] == experiments["baseline"]["data"]["metrics"]["reports/metrics.json"]["data"]["vae"]["fid"]

    dvc(workspace, "exp", "apply", "baseline")  # back to the baseline, from the local cache
    assert yaml.safe_load((workspace / "params.yaml").read_text())["train"]["vae"]["lr"] == 0.001
    assert json.loads(dvc(workspace, "metrics", "diff", "baseline", "--json")) == {}


def test_dvc_exp_run_set_param_changes_only_that_line_of_params_yaml(tmp_path):
    """params.yaml is written in the style DVC writes back (block lists, empty nulls), so `dvc exp run -S`
    leaves every other line, comments included, as it was."""
    import shutil
    import subprocess

    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    shutil.copy(REPO_ROOT / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text("stages:\n  noop:\n    cmd: echo ok\n    params:\n      - train.gan.images\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "params"], cwd=root, check=True)
    before = (root / "params.yaml").read_text().splitlines()
    dvc(root, "exp", "run", "-q", "-S", "train.gan.images=5000")
    after = (root / "params.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 1, changed
    assert changed[0][1].strip().startswith("images: 5000")
