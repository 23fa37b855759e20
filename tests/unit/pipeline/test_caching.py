"""Stage stamps (genloop.pipeline.caching): what makes a stage run again, and agreement with dvc.yaml."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genloop.pipeline import caching
from genloop.config import Params, load_params
from genloop.paths import ProjectPaths

from conftest import REPO_ROOT

SPEC = caching.StageSpec("toy", ("augment",), ("inputs",), ("outputs/toy",), ("genloop.stages.augment",))


@pytest.fixture
def project(tmp_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "a.txt").write_text("one")
    return ProjectPaths.at(tmp_path)


def _run(paths: ProjectPaths, params: Params, result: str = "done") -> caching.CacheCheck:
    checked = caching.check(SPEC, params, paths)
    if not checked.hit:
        caching.forget(SPEC, paths)
        out = paths.root / "outputs" / "toy"
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.txt").write_text(result)
        caching.record(SPEC, paths, checked, {"result": result})
    return checked


def test_unchanged_inputs_hit_with_the_stored_result(project):
    assert _run(project, Params()).reason == "no earlier run recorded"
    again = caching.check(SPEC, Params(), project)
    assert again.hit and again.result == {"result": "done"} and again.reason == "inputs unchanged"


def test_a_params_change_names_the_section(project):
    _run(project, Params())
    changed = caching.check(SPEC, load_params(project.root / "none.yaml", {"augment.copies": 3}), project)
    assert not changed.hit and changed.reason == "changed: params augment"
    other = caching.check(SPEC, load_params(project.root / "none.yaml", {"train.vae.images": 3}), project)
    assert other.hit  # a section the stage does not read


def test_a_changed_dependency_misses(project):
    _run(project, Params())
    (project.root / "inputs" / "b.txt").write_text("two")
    assert caching.check(SPEC, Params(), project).reason == "changed: inputs"


def test_a_deleted_or_edited_output_misses(project):
    _run(project, Params())
    out = project.root / "outputs" / "toy" / "result.txt"
    out.write_text("edited by hand")
    assert caching.check(SPEC, Params(), project).reason == "output(s) changed on disk: outputs/toy"
    out.parent.joinpath("result.txt").unlink()
    out.parent.rmdir()
    assert caching.check(SPEC, Params(), project).reason == "output(s) missing: outputs/toy"


def test_code_fingerprint_follows_genloop_imports():
    closure = caching.code_fingerprint(("genloop.stages.train",))
    assert closure != caching.code_fingerprint(("genloop.core.models.vae",))
    assert caching._module_file("genloop.core.models.vae") == caching.PACKAGE_DIR / "core" / "models" / "vae.py"
    assert caching._module_file("genloop.stages.train.train_model") is None


def _dvc_entries(items) -> set[str]:
    return {next(iter(i)) if isinstance(i, dict) else i for i in items or []}


def _dvc_stages() -> dict:
    return yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", list(_dvc_stages()))
def test_stage_keys_cover_what_dvc_yaml_declares(name):
    """The flow's skip decision must not be looser than `dvc repro`'s for the same stage."""
    stage = _dvc_stages()[name]
    spec = caching.stage_spec(REPO_ROOT, name)
    params = _dvc_entries(stage.get("params"))
    assert params <= set(spec.params), f"params in dvc.yaml but not in the cache key: {params - set(spec.params)}"
    deps = _dvc_entries(stage.get("deps"))
    code = {d for d in deps if d.startswith("src/")}
    assert deps - code <= set(spec.deps), f"deps missing from the cache key: {deps - code - set(spec.deps)}"
    seen = caching.code_files(spec.code)
    missing = {c for c in code if (REPO_ROOT / c).resolve() not in seen}
    assert not missing, f"source files dvc.yaml lists that the cache key does not hash: {missing}"
    outs = _dvc_entries(stage.get("outs")) | _dvc_entries(stage.get("metrics"))
    assert outs <= set(spec.outs), f"outputs not checked on disk: {outs - set(spec.outs)}"


def _stages_the_flow_runs() -> set[str]:
    """The names flows/pipeline.py passes to run_or_skip (``f"train_{kind}"`` once per model)."""
    import ast

    from flows import pipeline

    names = set()
    for node in ast.walk(ast.parse(Path(pipeline.__file__).read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_or_skip":
            first = node.args[0]
            if isinstance(first, ast.Constant):
                names.add(first.value)
            else:
                prefix = "".join(v.value for v in first.values if isinstance(v, ast.Constant))
                names.update(prefix + kind for kind in pipeline.MODELS)
    return names


def test_the_flow_runs_exactly_the_stages_of_dvc_yaml():
    from flows import pipeline

    assert set(pipeline.STAGES) == set(_dvc_stages())
    assert _stages_the_flow_runs() == set(pipeline.STAGES)


def test_the_stage_table_is_read_from_the_projects_dvc_yaml(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"toy": {
        "cmd": "genloop augment",
        "deps": ["inputs", {"src/genloop/stages/augment.py": {"hash": "md5"}}],
        "params": ["seed", {"params.yaml": ["augment.copies"]}],
        "outs": [{"outputs/toy": {"persist": True}}], "metrics": ["reports/toy.json"],
    }}}))
    spec = caching.stage_spec(tmp_path, "toy")
    assert spec == caching.StageSpec("toy", ("seed", "augment.copies"), ("inputs",),
                                     ("outputs/toy", "reports/toy.json"), ("genloop.stages.augment",))
    with pytest.raises(KeyError, match="stage 'train_vae' is not in .*dvc.yaml .it has toy"):
        caching.stage_spec(tmp_path, "train_vae")


def test_a_project_without_dvc_yaml_uses_the_checkouts(tmp_path):
    assert caching.dvc_file(tmp_path) == REPO_ROOT / "dvc.yaml"
    assert set(caching.stages(tmp_path)) == set(_dvc_stages())


def test_params_from_another_file_are_refused(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"toy": {
        "cmd": "x", "params": [{"other.yaml": ["a"]}]}}}))
    with pytest.raises(ValueError, match="params from 'other.yaml'; genloop reads only params.yaml"):
        caching.stages(tmp_path)


def test_a_stage_command_leaves_the_stamp_the_flow_skips_on(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"toy": {
        "cmd": "genloop augment", "deps": ["inputs"], "params": ["augment"], "outs": ["outputs/toy"]}}}))
    (tmp_path / "inputs").write_text("one")
    paths = ProjectPaths.at(tmp_path)

    def run():
        (tmp_path / "outputs" / "toy").mkdir(parents=True)
        return "result"

    assert caching.run_recorded("toy", Params(), paths, run, in_dvc_lock=True) == "result"
    checked = caching.check(caching.stage_spec(tmp_path, "toy"), Params(), paths)
    assert checked.hit and checked.result == "result"
    assert caching.missing_from_dvc_lock(["toy"], paths, locked={"toy"}) == []
    assert caching.missing_from_dvc_lock(["toy"], paths, locked=set()) == ["toy"]  # dvc.lock lost it
    caching.run_recorded("toy", Params(), paths, lambda: "again")  # by hand, outside dvc repro
    assert caching.missing_from_dvc_lock(["toy"], paths, locked={"toy"}) == ["toy"]
    caching.mark_in_dvc_lock(["toy"], paths)
    assert caching.missing_from_dvc_lock(["toy"], paths, locked={"toy"}) == []
