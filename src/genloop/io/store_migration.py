"""Copy an MLflow store (the project's SQLite file) into another store or tracking server: experiments,
runs with their params, full metric histories, tags, status, times, dataset inputs and artifacts, and
registered models with their versions, tags and aliases.

MLflow 3.17 itself has no such command (``mlflow migrate-filestore`` only turns a ``./mlruns`` file
store into SQLite; ``mlflow db upgrade`` only migrates a schema in place); the separate
mlflow-export-import project does this through an intermediate folder. Run ids are new on the target:
every tag or version tag whose value is a migrated run id (``mlflow.parentRunId``, genloop's
``genloop.reused_run.*``, a version's ``run_id``) is rewritten to the new id.

Re-running is safe: an experiment or registered model this migration already copied in full is
skipped; an interrupted one (killed mid-copy) is resumed: its runs copied in full are kept, half-copied
runs are deleted and copied again, a half-copied registered model is copied again from the start. One
that exists on the target for any other reason (and is not an empty experiment such as a new server's
``Default``) makes the whole migration stop before it writes anything.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genloop.errors import GenloopError
from genloop.io import crashpoints
from genloop.io.promotion import HISTORY_TAG

SOURCE_TAG = "genloop.migrated_from"  # on each copied experiment, run and registered model
DONE_TAG = "genloop.migration"  # "complete" once an experiment or registered model is copied in full
PARENT_TAG = "mlflow.parentRunId"
BATCH = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's log_batch limits


class MigrationRefusedError(GenloopError):
    """The target already holds something of the same name that this migration did not put there."""


@dataclass
class MigrationReport:
    experiments: int = 0
    runs: int = 0
    metric_points: int = 0
    params: int = 0
    artifacts: int = 0
    models: int = 0
    versions: int = 0
    aliases: int = 0
    skipped: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)  # aliases --update-aliases moved: "NAME@ALIAS vA -> vB"
    run_ids: dict[str, str] = field(default_factory=dict)  # source run id -> target run id

    def summary(self) -> str:
        text = (f"copied {self.experiments} experiment(s), {self.runs} run(s) ({self.params} params, "
                f"{self.metric_points} metric points, {self.artifacts} artifact files), {self.models} registered "
                f"model(s) with {self.versions} version(s) and {self.aliases} alias(es)")
        text += f"; already there, skipped: {', '.join(self.skipped)}" if self.skipped else ""
        return text + (f"; aliases moved to match the source: {', '.join(self.moved)}" if self.moved else "")


def resolve_store_uri(uri: str, root: Path) -> str:
    """A relative ``sqlite:///file`` is relative to the project root, as genloop's own store is."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((root / uri[len(prefix):]).resolve())
    return uri


def _clients(uri: str):
    from mlflow import MlflowClient

    from genloop.io.tracking import check_sqlite_store

    if uri.startswith("sqlite:///"):
        check_sqlite_store(Path(uri[len("sqlite:///"):]))
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _pages(search: Callable[..., Any], **kwargs) -> Iterator[Any]:
    token = None
    while True:
        page = search(**kwargs, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _origin(source_uri: str, what: str) -> str:
    return f"{source_uri}#{what}"


def _check_source(source_uri: str) -> None:
    if source_uri.startswith("sqlite:///"):
        db = Path(source_uri[len("sqlite:///"):])
        if not db.is_file():
            raise GenloopError(f"no MLflow store at {db}: nothing to migrate (--from names the source store)")


def _plan(src, dst, source_uri: str, target_uri: str) -> tuple[list, list, list[str], list[str]]:
    """The experiments and registered models to copy, what is already copied (and the names of those
    models); refuse conflicts."""
    from mlflow.entities import ViewType

    experiments, models, skipped, conflicts, copied_models = [], [], [], [], []
    for exp in _pages(src.search_experiments, view_type=ViewType.ACTIVE_ONLY):
        if not _has_runs(src, exp.experiment_id) and exp.name == "Default":
            continue  # every store has an empty Default experiment
        there, origin = dst.get_experiment_by_name(exp.name), _origin(source_uri, exp.experiment_id)
        ours = there is not None and there.tags.get(SOURCE_TAG) == origin
        if ours and there.tags.get(DONE_TAG) == "complete":
            skipped.append(f"experiment {exp.name!r}")
        elif there is None or (there.lifecycle_stage == "active" and (
                ours or (there.tags.get(SOURCE_TAG) is None and not _has_runs(dst, there.experiment_id, all_runs=True)))):
            experiments.append((exp, there))  # new, an empty one to fill, or ours interrupted: resumed
        else:
            conflicts.append(_conflict(f"experiment {exp.name!r}", there))
    for model in _pages(src.search_registered_models):
        there = _registered_model(dst, model.name)
        ours = there is not None and there.tags.get(SOURCE_TAG) == _origin(source_uri, "model")
        if ours and there.tags.get(DONE_TAG) == "complete":
            skipped.append(f"registered model {model.name!r}")
            copied_models.append(model.name)
        elif there is None or ours:  # ours interrupted: copied again from the start
            models.append(model)
        else:
            conflicts.append(f"registered model {model.name!r}")
    if conflicts:
        raise MigrationRefusedError(
            f"{target_uri} already has {', '.join(conflicts)}, not copied there from {source_uri} by an earlier "
            "migrate-store; nothing was written. Delete or rename them on the target (or use an empty one) and "
            "run again.")
    return experiments, models, skipped, copied_models


def _conflict(what: str, there) -> str:
    if there.lifecycle_stage == "active":
        return what
    return (f"{what} (deleted, which keeps its name until purged: `mlflow gc --backend-store-uri <the target's "
            f"database URI> --experiment-ids {there.experiment_id}`)")


def _has_runs(client, experiment_id: str, all_runs: bool = False) -> bool:
    from mlflow.entities import ViewType

    view = ViewType.ALL if all_runs else ViewType.ACTIVE_ONLY
    return bool(client.search_runs([experiment_id], run_view_type=view, max_results=1))


def _registered_model(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        return None


def _parents_first(runs: list) -> list:
    """Order runs so that a parent comes before its children (creation order on the target)."""
    by_id = {r.info.run_id: r for r in runs}
    ordered, seen = [], set()

    def visit(run) -> None:
        if run.info.run_id in seen:
            return
        seen.add(run.info.run_id)
        parent = by_id.get(run.data.tags.get(PARENT_TAG, ""))
        if parent is not None:
            visit(parent)
        ordered.append(run)

    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        visit(run)
    return ordered


def _remapped(tags: dict[str, str], run_ids: dict[str, str]) -> dict[str, str]:
    """Tags whose value is a migrated run id point at the new id."""
    return {key: run_ids.get(value, value) for key, value in tags.items()}


def _copy_run(src, dst, run, experiment_id: str, run_ids: dict[str, str], source_uri: str,
              report: MigrationReport, scratch: Path) -> str:
    from mlflow.entities import Metric, Param, RunTag

    old = run.info.run_id
    new = dst.create_run(experiment_id, start_time=run.info.start_time, run_name=run.info.run_name).info.run_id
    run_ids[old] = new
    metrics = [Metric(key, m.value, m.timestamp, m.step)
               for key in run.data.metrics for m in src.get_metric_history(old, key)]
    params = [Param(k, v) for k, v in run.data.params.items()]
    tags = [RunTag(k, v) for k, v in {**_remapped(run.data.tags, run_ids), SOURCE_TAG: _origin(source_uri, old)}.items()
            if k != DONE_TAG]
    for kind, items in (("metrics", metrics), ("params", params), ("tags", tags)):
        for chunk in _chunks(items, BATCH[kind]):
            dst.log_batch(new, **{kind: chunk})
    if run.inputs and run.inputs.dataset_inputs:
        dst.log_inputs(new, datasets=run.inputs.dataset_inputs)
    crashpoints.reached("migrate_run_half_copied")
    report.artifacts += _copy_artifacts(src, dst, old, new, scratch)
    if run.info.status != "RUNNING":
        dst.set_terminated(new, status=run.info.status, end_time=run.info.end_time)
    dst.set_tag(new, DONE_TAG, "complete")  # last: a run without it is a half copy, redone by the next migration
    report.runs += 1
    report.metric_points += len(metrics)
    report.params += len(params)
    return new


def _copy_artifacts(src, dst, old: str, new: str, scratch: Path) -> int:
    if not src.list_artifacts(old):
        return 0
    folder = Path(tempfile.mkdtemp(dir=scratch))
    local = Path(src.download_artifacts(old, "", dst_path=str(folder)))
    dst.log_artifacts(new, str(local))
    return sum(1 for p in local.rglob("*") if p.is_file())


def _copy_experiment(src, dst, exp, there, source_uri: str, report: MigrationReport,
                     scratch: Path) -> tuple[str, list]:
    from mlflow.entities import ViewType

    origin = _origin(source_uri, exp.experiment_id)
    tags = {k: v for k, v in exp.tags.items() if k != DONE_TAG}
    if there is None:
        experiment_id = _create_experiment(dst, exp.name, tags={**tags, SOURCE_TAG: origin})
    else:
        experiment_id = there.experiment_id
        for key, value in {**tags, SOURCE_TAG: origin}.items():
            dst.set_experiment_tag(experiment_id, key, value)
    runs = list(_pages(src.search_runs, experiment_ids=[exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                       max_results=1000))
    copied = _resumable_runs(dst, experiment_id, source_uri) if there is not None else {}
    report.run_ids.update(copied)
    for run in _parents_first(runs):
        if run.info.run_id not in copied:
            _copy_run(src, dst, run, experiment_id, report.run_ids, source_uri, report, scratch)
    return experiment_id, runs


def _resumable_runs(dst, experiment_id: str, source_uri: str) -> dict[str, str]:
    """An interrupted migration's runs in ``experiment_id``: source id -> target id of those copied in full;
    the half-copied ones are deleted, to be copied again."""
    prefix, copied = _origin(source_uri, ""), {}
    for run in list(_pages(dst.search_runs, experiment_ids=[experiment_id], max_results=1000)):
        origin = run.data.tags.get(SOURCE_TAG, "")
        if origin.startswith(prefix) and run.data.tags.get(DONE_TAG) == "complete":
            copied[origin[len(prefix):]] = run.info.run_id
        else:
            dst.delete_run(run.info.run_id)
    return copied


def _relink(dst, runs: list, run_ids: dict[str, str]) -> None:
    """Tags naming a run copied after them (a parent's ``genloop.reused_run.*`` names its child) get the
    new id once every run exists."""
    for run in runs:
        for key, value in run.data.tags.items():
            if value in run_ids:
                dst.set_tag(run_ids[run.info.run_id], key, run_ids[value])


def _copy_model(src, dst, model, source_uri: str, report: MigrationReport, scratch: Path) -> None:
    """Create the registered model and its versions in order, then its aliases."""
    if _registered_model(dst, model.name) is not None:  # an interrupted copy of ours (_plan refused any other)
        dst.delete_registered_model(model.name)
    tags = {**{k: v for k, v in model.tags.items() if k != DONE_TAG}, SOURCE_TAG: _origin(source_uri, "model")}
    dst.create_registered_model(model.name, tags=tags, description=model.description or None)
    numbers: dict[str, str] = {}
    for version in _versions(src, model.name):
        numbers[str(version.version)] = _copy_version(src, dst, model.name, version, source_uri, report, scratch)
        crashpoints.reached("migrate_model_half_copied")
    for alias, version in (src.get_registered_model(model.name).aliases or {}).items():  # search omits aliases
        if str(version) in numbers:
            dst.set_registered_model_alias(model.name, alias, numbers[str(version)])
            report.aliases += 1
    dst.set_registered_model_tag(model.name, DONE_TAG, "complete")
    report.models += 1


def _versions(client, name: str) -> list:
    return sorted(_pages(client.search_model_versions, filter_string=f"name='{_quoted(name)}'"),
                  key=lambda v: int(v.version))


def _copy_version(src, dst, name: str, version, source_uri: str, report: MigrationReport, scratch: Path) -> str:
    """One version: its files go into the migrated run's artifacts (``registered_models/NAME/vN``, or a run of
    their own when the run was not migrated) and its source points there; returns the target's number."""
    import mlflow.artifacts

    files = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=src.get_model_version_download_uri(name, version.version),
        dst_path=tempfile.mkdtemp(dir=scratch), tracking_uri=source_uri))
    run_id = report.run_ids.get(version.run_id or "")
    if run_id is None:  # the run was deleted or lived elsewhere: keep the files in a run of their own
        experiment_id = _holding_experiment(dst)
        run_id = dst.create_run(experiment_id, run_name=f"{name}-v{version.version}-files",
                                tags={SOURCE_TAG: _origin(source_uri, f"{name}/{version.version}")}).info.run_id
        dst.set_terminated(run_id)
    artifact_path = f"registered_models/{name}/v{version.version}"
    dst.log_artifacts(run_id, str(files), artifact_path=artifact_path)
    source = f"{dst.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    tags = {**_remapped(dict(version.tags), report.run_ids), SOURCE_TAG: _origin(source_uri, f"{name}/{version.version}")}
    created = dst.create_model_version(name, source, run_id=run_id, tags=tags, description=version.description or None)
    report.versions += 1
    return str(created.version)


def _version_numbers(dst, name: str, source_versions: list, source_uri: str) -> dict[str, str]:
    """Source version -> target version of a model copied earlier: from each copy's ``genloop.migrated_from``
    tag; copies made before versions carried it were created in source order, so they pair up in order."""
    numbers, untagged = {}, []
    for version in _versions(dst, name):
        origin = version.tags.get(SOURCE_TAG, "")
        if origin.startswith(_origin(source_uri, f"{name}/")):
            numbers[origin.rpartition("/")[2]] = str(version.version)
        elif SOURCE_TAG not in version.tags:
            untagged.append(str(version.version))
    unmatched = [str(v.version) for v in source_versions if str(v.version) not in numbers]
    numbers.update(zip(unmatched, untagged))
    return numbers


def _update_aliases(src, dst, name: str, source_uri: str, report: MigrationReport, scratch: Path) -> None:
    """A model copied earlier: copy the versions registered on the source since, then point every alias the
    source has at the same version on the target (e.g. ``champion`` after the source's gate moved it)."""
    source_versions = _versions(src, name)
    numbers = _version_numbers(dst, name, source_versions, source_uri)
    for version in source_versions:
        if str(version.version) not in numbers:
            numbers[str(version.version)] = _copy_version(src, dst, name, version, source_uri, report, scratch)
    target_aliases = {k: str(v) for k, v in (dst.get_registered_model(name).aliases or {}).items()}
    for alias, version in (src.get_registered_model(name).aliases or {}).items():
        wanted = numbers.get(str(version))
        if wanted is not None and target_aliases.get(alias) != wanted:
            dst.set_registered_model_alias(name, alias, wanted)
            report.moved.append(f"{name}@{alias} v{target_aliases.get(alias, '-')} -> v{wanted}")
            report.aliases += 1
    history = src.get_registered_model(name).tags.get(HISTORY_TAG)
    if history is not None:  # the promotion gate's record of champions, so `genloop rollback` works there too
        dst.set_registered_model_tag(name, HISTORY_TAG, _remapped_history(history, numbers))


def _remapped_history(raw: str, numbers: dict[str, str]) -> str:
    import json

    try:
        return json.dumps([numbers.get(str(v), str(v)) for v in json.loads(raw)])
    except (ValueError, TypeError):
        return raw


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


def _holding_experiment(dst) -> str:
    name = "genloop-migrated-model-files"
    exp = dst.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else _create_experiment(dst, name)


def _create_experiment(dst, name: str, tags: dict[str, str] | None = None) -> str:
    """A new experiment on the target. A server keeps artifacts where it chooses; a SQLite file keeps them in
    ``artifacts/`` beside it (as genloop's own store does), not in MLflow's default ``./mlruns`` of whatever
    folder the command ran in."""
    uri = dst.tracking_uri
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return dst.create_experiment(name, artifact_location=location, tags=tags)


def migrate_store(source_uri: str, target_uri: str, progress: Callable[[str], None] | None = None,
                  update_aliases: bool = False) -> MigrationReport:
    """Copy every active experiment (with its runs) and every registered model of ``source_uri`` to
    ``target_uri``. Deleted experiments and runs stay behind. ``update_aliases``: a model copied earlier
    also gets the versions registered since and its aliases moved to match the source."""
    if source_uri == target_uri:
        raise GenloopError(f"--from and --to are the same store ({source_uri})")
    _check_source(source_uri)
    say = progress or (lambda _message: None)
    src, dst = _clients(source_uri), _clients(target_uri)
    experiments, models, skipped, copied_models = _plan(src, dst, source_uri, target_uri)
    report = MigrationReport(skipped=skipped)
    if skipped:  # runs copied earlier keep their ids: version tags and aliases can still point at them
        report.run_ids.update(_earlier_run_ids(dst, source_uri))
    with tempfile.TemporaryDirectory(prefix="genloop-migrate-") as scratch, _global_uri(source_uri):
        copied = []
        for exp, there in experiments:
            say(f"experiment {exp.name!r}")
            copied.append(_copy_experiment(src, dst, exp, there, source_uri, report, Path(scratch)))
        for experiment_id, runs in copied:
            _relink(dst, runs, report.run_ids)
            dst.set_experiment_tag(experiment_id, DONE_TAG, "complete")
            report.experiments += 1
        for model in models:
            say(f"registered model {model.name!r}")
            _copy_model(src, dst, model, source_uri, report, Path(scratch))
        for name in copied_models if update_aliases else []:
            say(f"new versions and aliases of registered model {name!r}")
            _update_aliases(src, dst, name, source_uri, report, Path(scratch))
    return report


@contextmanager
def _global_uri(uri: str) -> Iterator[None]:
    """MLflow 3.17 resolves a LoggedModel (``models:/m-...``) version source through the process-wide
    tracking URI, whatever the client's: point it at the source while copying."""
    import mlflow

    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def _earlier_run_ids(dst, source_uri: str) -> dict[str, str]:
    from mlflow.entities import ViewType

    prefix = _origin(source_uri, "")
    found = {}
    for exp in _pages(dst.search_experiments, view_type=ViewType.ACTIVE_ONLY):
        for run in _pages(dst.search_runs, experiment_ids=[exp.experiment_id], max_results=1000,
                          filter_string=f"tags.`{SOURCE_TAG}` LIKE '{prefix}%'"):
            found[run.data.tags[SOURCE_TAG][len(prefix):]] = run.info.run_id
    return found

