"""The ``genloop`` command: one sub-command per stage, plus ``run`` for the whole Prefect flow.

Heavy libraries are imported inside the commands so ``--help`` stays instant.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from genloop.io.telemetry import switch_off

CLI_LOG_HANDLER = "genloop-cli"


def _parse_overrides(values: tuple[str, ...], option: str = "--set",
                     form: str = "KEY=VALUE, e.g. -S train.vae.images=50000") -> dict[str, Any]:
    """KEY=VALUE items as {key: YAML value}. A key given twice (in two items, or twice in one value's
    mapping) is refused naming it: silently keeping the last would run with a setting the user did not see."""
    import yaml

    from genloop.config import yaml_load

    overrides: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected {form}", param_hint=option)
        if key in overrides:
            raise click.BadParameter(f"{key} is given twice ({key}={raw} after {key}={overrides[key]!r}); "
                                     "give each key once", param_hint=option)
        try:
            overrides[key] = yaml_load(raw)
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"{item!r}: the value is not valid YAML ({exc.problem or exc})",
                                     param_hint=option) from None
    _refuse_overlaps(overrides, option)
    return overrides


def _leaf_paths(key: str, value: Any) -> list[str]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaf_paths(f"{key}.{k}", v)]
    return [key]


def _refuse_overlaps(overrides: dict[str, Any], option: str) -> None:
    """``-S train.vae.lr=1 -S 'train.vae={lr: 2}'`` sets one setting twice under two spellings: refuse it too."""
    seen: dict[str, str] = {}
    for key, value in overrides.items():
        for leaf in _leaf_paths(key, value):
            clash = next((s for s in seen if s == leaf or s.startswith(leaf + ".") or leaf.startswith(s + ".")), None)
            if clash is not None:
                raise click.BadParameter(f"{leaf} is given twice (in {seen[clash]} and in {key}); give each key once",
                                         param_hint=option)
            seen[leaf] = key


class Context:
    def __init__(self, root: Path, params_file: Path | None, overrides: dict[str, Any], wait: float = 0.0):
        from genloop.paths import ProjectPaths

        self.paths = ProjectPaths.at(root)
        self.params_file = params_file or self.paths.params
        self.params_required = params_file is not None
        self.overrides = overrides
        self.wait = wait
        self._noted_defaults = False

    def params(self):
        from genloop.config import load_params
        from genloop.errors import display_path

        if not self.params_required and not self.params_file.exists() and not self._noted_defaults:
            click.echo(f"note: {display_path(self.params_file)} not found; using the default parameters", err=True)
            self._noted_defaults = True
        return load_params(self.params_file, self.overrides, required=self.params_required)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=".",
              show_default=True, help="Project root holding params.yaml, data/, outputs/, models/, reports/, mlflow/.")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Parameters file (default: ROOT/params.yaml; when that is absent, the defaults).")
@click.option("--set", "-S", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a parameter, e.g. -S train.vae.images=50000 (repeatable).")
@click.option("--wait", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS", show_default=True,
              help="If another genloop command is writing to this project, wait up to SECONDS for it "
                   "(default: fail at once, naming it).")
@click.pass_context
def main(ctx: click.Context, root: Path, params_file: Path | None, overrides: tuple[str, ...], wait: float) -> None:
    """genloop: collect -> clean -> augment -> train -> evaluate -> export, tracked in MLflow."""
    switch_off()
    _log_to_stderr()
    ctx.obj = Context(root, params_file, _parse_overrides(overrides), wait)


def _log_to_stderr() -> None:
    """genloop's INFO lines (e.g. training progress when no terminal shows a progress bar) on stderr."""
    import logging

    logger = logging.getLogger("genloop")
    if not logger.handlers and not logging.getLogger().handlers:  # leave configured hosts (pytest) alone
        handler = logging.StreamHandler()
        handler.set_name(CLI_LOG_HANDLER)  # a flow run swaps it for Prefect's (genloop.pipeline.prefect_artifacts)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _fail(exc: BaseException) -> None:
    from genloop.errors import printable

    click.secho(f"error: {printable(str(exc))}", fg="red", err=True)
    sys.exit(1)


def _handled(fn):
    """Show user errors (GenloopError: bad input, bad config, failed checks, a busy project) as one
    clear line and exit 1; anything else is a bug and keeps its traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from genloop.errors import is_user_error

        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if is_user_error(exc):
                _fail(exc)
            from genloop.io.services import unreachable_tracking_server

            note = unreachable_tracking_server(exc)
            if note is None:
                raise
            _fail(RuntimeError(note))

    return wrapper


def _locked(fn):
    """Hold the project lock (genloop.io.lock) while the command writes state, after putting right what
    a killed collect left (genloop.io.datacommit)."""
    import functools

    @functools.wraps(fn)
    def wrapper(obj: Context, *args, **kwargs):
        from genloop.io.datacommit import recover
        from genloop.io.lock import project_lock

        with project_lock(obj.paths.root, wait=obj.wait):
            done = recover(obj.paths)
            if done:
                click.echo(f"note: {done}", err=True)
            return fn(obj, *args, **kwargs)

    return wrapper


@main.command()
@click.option("--source", default=None, metavar="SPEC",
              help="Data source: digits (scikit-learn's bundled 8x8 digits, offline), mnist, fashion-mnist, "
                   "kmnist (from ~/.cache/genloop/<name> or $GENLOOP_CACHE, downloaded with checksums if "
                   "missing), emoji (Noto Color Emoji rendered in colour, offline: `make emoji-font`), idx:PATH (folder of *-images-idx3-ubyte[.gz] files), folder:PATH (one "
                   "subfolder per class of PNG/JPEG), npz:PATH (arrays images and labels). "
                   "Default: collect.source in params.yaml.")
@click.option("--mode", type=click.Choice(["replace", "append"]), default="replace", show_default=True,
              help="replace data/ with the source, or append it to data/ as a new batch (same image size).")
@click.option("--resize", default=None, metavar="HxW",
              help="Resize every image to HxW (e.g. 28x28); wins over collect.size (a square side).")
@click.option("--no-dvc", is_flag=True, help="Write data/ without running `dvc add`.")
@click.pass_obj
@_handled
@_locked
def collect(obj: Context, source: str | None, mode: str, resize: str | None, no_dvc: bool) -> None:
    """Read a source into data/ (images.npy + manifest.csv) and version it with DVC (data.dvc).

    Every source is read and checked in full before data/ changes; a bad one leaves data/ and
    data.dvc as they were. With a default DVC remote, data/ is pushed there afterwards; a clone
    without data/ pulls data.dvc's version from it instead of collecting (unless --source is given;
    --mode append pulls it, then appends).
    """
    from genloop.stages.collect import collect as run
    from genloop.io.sources import parse_size

    config = obj.params().collect
    if source:
        config = config.model_copy(update={"source": source})
    size = parse_size(resize) if resize else None
    result = run(config, obj.paths, version_with_dvc=not no_dvc, mode=mode, resize=size,
                 max_rows=obj.params().clean.max_rows, pull_if_missing=source is None or mode == "append")
    for warning in result.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    shape = f"{result.image_shape[0]}x{result.image_shape[1]}" + (" colour" if result.channels == 3 else "")
    if result.pulled_from and result.mode == "replace":
        click.echo(f"pulled {result.rows} images of {shape} into {result.data_dir} from DVC remote "
                   f"{result.pulled_from!r} (dvc md5 {result.dvc_hash}, checked against data.dvc)")
        return
    if result.mode == "append":
        if result.pulled_from:
            click.echo(f"pulled data/ ({result.rows - result.added} images) from DVC remote {result.pulled_from!r} first")
        click.echo(f"appended {result.added} images of {shape} from {config.source!r} as batch {result.batch}; "
                   f"{result.data_dir} now holds {result.rows} (dvc md5 {result.dvc_hash})")
    else:
        click.echo(f"collected {result.rows} images of {shape} from {config.source!r} into {result.data_dir} "
                   f"(dvc md5 {result.dvc_hash})")
    if result.pushed_to:
        click.echo(f"pushed data/ to DVC remote {result.pushed_to!r}")


def _recorded(obj: Context, name: str, run):
    """Run stage ``name`` and leave the stamp that lets `genloop run` skip it afterwards. Under
    `dvc repro` (which names the stage in DVC_STAGE) DVC records its outputs in dvc.lock itself."""
    import os

    from genloop.pipeline import caching

    return caching.run_recorded(name, obj.params(), obj.paths, run, in_dvc_lock=os.environ.get("DVC_STAGE") == name)


def _record(obj: Context, name: str, result) -> None:
    """The DVC route's MLflow record of a stage (genloop.pipeline.recording, the flow's too)."""
    from genloop.pipeline.recording import record_stage

    run_id, logged = record_stage(name, result, obj.params(), obj.paths)
    click.echo(f"logged {', '.join(logged) or 'nothing'} to MLflow run {run_id}")


@main.command()
@click.option("--no-mlflow", is_flag=True, help="Do not log the validation report and Data Docs to MLflow.")
@click.pass_obj
@_handled
@_locked
def clean(obj: Context, no_mlflow: bool) -> None:
    """Validate data/ with Great Expectations, quarantine bad rows, split into train/val/test.

    Also writes Data Docs (reports/data_docs/index.html) and near-duplicates across splits
    (reports/near_duplicates.csv); all three reports are logged to MLflow.
    """
    from genloop.io.validation import DataValidationError
    from genloop.stages.clean import report_files
    from genloop.stages.clean import clean as run

    try:
        r = _recorded(obj, "clean", lambda: run(obj.params().clean, obj.paths))
    except DataValidationError:
        if not no_mlflow:  # the reports say why: keep them with the run
            from genloop.pipeline.recording import record_reports

            record_reports(report_files(obj.paths), obj.params(), obj.paths)
        raise
    click.echo(r.summary())
    if not no_mlflow:
        _record(obj, "clean", r)


@main.command()
@click.option("--no-mlflow", is_flag=True, help="Do not log the preview grid to MLflow.")
@click.pass_obj
@_handled
@_locked
def augment(obj: Context, no_mlflow: bool) -> None:
    """Add seeded rotated/scaled/cropped/shifted (optionally elastically warped) copies of the training
    split (outputs/augment/train.npz) and a preview grid of originals beside their copies (preview.png)."""
    from genloop.stages.augment import augment as run

    params = obj.params()
    r = _recorded(obj, "augment", lambda: run(params.augment, obj.paths, params.seed))
    click.echo(f"{r.originals} training images + {r.augmented} augmented -> {r.output}; preview {r.preview}")
    if not no_mlflow:
        _record(obj, "augment", r)


@main.command()
@click.option("--model", type=click.Choice(["vae", "gan", "all"]), default="all", show_default=True)
@click.option("--parent-run-id", default=None, help="MLflow run to nest under (default: one per data hash and commit).")
@click.option("--fresh", is_flag=True, help="Ignore a checkpoint left by an interrupted training with the same "
                                            "config and data (default: resume from it).")
@click.pass_obj
@_handled
@_locked
def train(obj: Context, model: str, parent_run_id: str | None, fresh: bool) -> None:
    """Train the VAE and/or the GAN; each is an MLflow child run with losses, throughput and samples.

    Training state is saved after every epoch under outputs/checkpoints/; an interrupted training
    started again with the same config and data continues from its last finished epoch.
    """
    from genloop.stages.train import train_model

    params = obj.params()
    for kind in (["vae", "gan"] if model == "all" else [model]):
        r = _recorded(obj, f"train_{kind}",
                      lambda: train_model(kind, params, obj.paths, parent_run_id, resume=not fresh))
        parent_run_id = r.parent_run_id
        resumed = f" (resumed from epoch {r.resumed_from_epoch})" if r.resumed_from_epoch else ""
        click.echo(f"{kind}: {r.images:,} images in {r.epochs} epochs{resumed}, {r.images_per_second:,.0f} images/s, "
                   f"final {', '.join(f'{k}={v:.4g}' for k, v in r.final_metrics.items())}; run {r.run_id}")


@main.command()
@click.option("--no-mlflow", is_flag=True, help="Only write reports/metrics.json and reports/index.html.")
@click.pass_obj
@_handled
@_locked
def evaluate(obj: Context, no_mlflow: bool) -> None:
    """Score both models (FID, KID, IS, precision/recall, density/coverage, class mix, memorisation;
    the VAE's test ELBO, IWAE NLL and SSIM) beside the real-vs-real floor; write the HTML report."""
    from genloop.stages.evaluate import evaluate as run
    from genloop.evaluation.summary import evaluation_warnings, metrics_table

    r = _recorded(obj, "evaluate", lambda: run(obj.params(), obj.paths, log_to_mlflow=not no_mlflow))
    click.echo(metrics_table(r.metrics))
    for line in evaluation_warnings(obj.paths):
        click.secho(line, fg="yellow", err=True)
    click.echo(f"held-out classifier accuracy {r.classifier_accuracy:.3f}; written to {r.report} and {r.html}")
    if not no_mlflow:
        _record(obj, "evaluate", r)


@main.command()
@click.option("--version", "version", default=None, metavar="N",
              help="Registered version to explain (default: the champion, else the latest).")
@click.option("--model", type=click.Choice(["vae", "gan"]), default="vae", show_default=True)
@click.option("--no-mlflow", is_flag=True, help="Only write the page; log nothing onto the version's run.")
@click.pass_obj
@_handled
@_locked
def explain(obj: Context, version: str | None, model: str, no_mlflow: bool) -> None:
    """The latent atlas of a registered version: what its latent dimensions or directions do, measured
    (MIG, DCI, traversals), real vs generated shapes, attribution; logged onto the version's run."""
    from genloop.evaluation.explain_version import explain_version

    report = explain_version(obj.params(), obj.paths, model, version, log_to_mlflow=not no_mlflow)
    for kind, atlas in report.atlases.items():
        scores = ", ".join(f"{k} {v:.3g}" for k, v in atlas.metrics().items())
        click.echo(f"{kind}: {scores or 'no scores'} ({atlas.seconds:.1f} s)")
        for reason in atlas.skipped:
            click.echo(f"  skipped: {reason}")
    click.echo(f"written to {report.html} and {report.json}")


@main.command(name="export")
@click.option("--no-register", is_flag=True, help="Skip logging to MLflow and the Model Registry.")
@click.pass_obj
@_handled
@_locked
def export_cmd(obj: Context, no_register: bool) -> None:
    """Export the VAE decoder and GAN generator to ONNX, check parity, register them in MLflow."""
    from genloop.stages.export import export as run

    r = _recorded(obj, "export", lambda: run(obj.params(), obj.paths, register=False if no_register else None))
    for m in r.models.values():
        click.echo(f"{m.kind}: {m.path} (max |ort - torch| {max(m.max_abs_diff.values()):.1e}; {m.registration()})")
        if m.promotion is not None:
            click.echo(f"  {m.promotion.summary()}")


def _registry_client(obj: Context):
    from genloop.io import tracking

    return tracking.registry_client(obj.params().mlflow, obj.paths)


@main.command()
@click.argument("name")
@click.argument("version")
@click.pass_obj
@_handled
@_locked
def promote(obj: Context, name: str, version: str) -> None:
    """Make VERSION of registered model NAME the champion by hand, skipping the metric gate.

    A version whose ONNX parity check did not pass is refused all the same.
    """
    from genloop.io import promotion

    before = promotion.promote(_registry_client(obj), name, version, reason="genloop promote")
    click.echo(f"{name}: champion is now v{version}" + (f" (was v{before})" if before else ""))


@main.command()
@click.argument("name")
@click.pass_obj
@_handled
@_locked
def rollback(obj: Context, name: str) -> None:
    """Give registered model NAME's champion alias back to the previous champion."""
    from genloop.io import promotion

    previous, restored = promotion.rollback(_registry_client(obj), name)
    click.echo(f"{name}: champion rolled back from v{previous} to v{restored}")


@main.command()
@click.option("--version", "version", type=click.IntRange(min=1), required=True, help="Registered version to sample.")
@click.option("--images", type=click.IntRange(min=1), required=True, help="Labelled images to write.")
@click.option("--model", default=None, help="Registered model name (default: export.gan_model_name).")
@click.option("--seed", type=int, default=None, help="Sampling seed (default: the project seed).")
@click.pass_obj
@_handled
@_locked
def synthesize(obj: Context, version: int, images: int, model: str | None, seed: int | None) -> None:
    """Write a labelled synthetic data set from a registered class-conditional model version.

    synthetic/<name>-v<N>/data.npz (readable by `genloop collect --source npz:PATH`) and manifest.json
    (model, version, ε, δ, seed), versioned with `dvc add` in a DVC project and logged as a run nested
    under the version's MLflow run. The set carries the model's privacy budget, no more and no less.
    """
    from genloop.stages.synthesize import synthesize as run_synthesize

    r = run_synthesize(obj.params(), obj.paths, version, images, model, seed)
    m = r.manifest
    budget = (f"ε = {m['epsilon']:.3g} at δ = {m['delta']:.3g}" if m["delta"] is not None and m["epsilon"] != float("inf")
              else "not private (ε = inf): it may reveal its training images")
    click.echo(f"{m['model']} v{m['version']}: {m['images']} labelled images in {r.data}; {budget}")
    versioned = f"DVC md5 {r.dvc_hash} ({r.folder.name}.dvc)" if r.dvc_hash else "not versioned (no DVC project)"
    click.echo(f"{versioned}; MLflow run {r.run_id}, nested under the version's run")


@main.command()
@click.option("--source", default=None, help="Override collect.source for this run.")
@click.option("--force", "--no-cache", "force", is_flag=True,
              help="Run every stage, even those whose params, inputs and code are unchanged since their last run.")
@click.pass_obj
@_handled
@_locked
def run(obj: Context, source: str | None, force: bool) -> None:
    """Run the whole loop as the Prefect flow `genloop-pipeline` (flows/pipeline.py) and summarise it.

    Stages whose inputs did not change since their last run are skipped (Prefect state Cached).
    """
    from flows.pipeline import pipeline as flow
    from genloop.evaluation.summary import run_summary
    from genloop.io.tracking import tracking_uri
    from genloop.pipeline.prefect_artifacts import quiet_user_error_tracebacks

    quiet_user_error_tracebacks()
    result = flow(params=obj.params(), paths=obj.paths, overrides=obj.overrides or None, source=source, force=force)
    click.echo(run_summary(result, obj.paths, tracking_uri(obj.params().mlflow, obj.paths.root)))


@main.command()
@click.option("--write-dvc-deps", is_flag=True,
              help="Rewrite the src/ deps of each stage in dvc.yaml as the genloop modules it imports.")
@click.pass_obj
@_handled
def stages(obj: Context, write_dvc_deps: bool) -> None:
    """Each stage of dvc.yaml and whether `genloop run` would run it now, and why.

    A stage reruns when its params, its input files, its outputs on disk or any genloop module it
    imports changed; `dvc repro` decides on the same inputs (dvc.yaml lists those modules).
    """
    from genloop.pipeline import caching, dvc_deps

    if write_dvc_deps:
        changed = dvc_deps.write(caching.dvc_file(obj.paths.root))
        click.echo(f"dvc.yaml: code deps rewritten for {', '.join(changed)}" if changed else "dvc.yaml: code deps up to date")
        return
    params = obj.params()
    for name, spec in caching.stages(obj.paths.root).items():
        checked = caching.check(spec, params, obj.paths)
        click.echo(f"{name:10} {'up to date' if checked.hit else 'runs: ' + checked.reason}")


@main.command()
@click.option("--method", type=click.Choice(["grid", "random"]), default=None, help="Default: sweep.method.")
@click.option("--n-trials", type=int, default=None, help="random: how many; grid: at most this many.")
@click.option("--space", "space_items", multiple=True, metavar="KEY=VALUES",
              help="Replace sweep.space, one key per option: a YAML list (train.vae.beta=[0.5,1.0]) or range "
                   "(train.vae.lr={low: 1e-4, high: 1e-2, log: true}).")
@click.option("--metric", default=None, help="MODEL.METRIC to rank trials by, e.g. vae.fid (default: sweep.metric).")
@click.option("--direction", type=click.Choice(["minimize", "maximize"]), default=None)
@click.option("--dask-address", default=None, metavar="tcp://HOST:PORT",
              help="Run the trials on this existing Dask cluster instead of a local one.")
@click.option("--workers", type=int, default=None, help="Local Dask worker processes (default: sweep.workers).")
@click.pass_obj
@_handled
@_locked
def sweep(obj: Context, method: str | None, n_trials: int | None, space_items: tuple[str, ...], metric: str | None,
          direction: str | None, dask_address: str | None, workers: int | None) -> None:
    """Search params (Prefect flow `genloop-sweep`, trials on Dask), one MLflow run per configuration.

    Needs the prepared data of a `genloop run`; trials train in their own folders under outputs/sweeps/.
    """
    import flows.sweep as module
    from genloop.pipeline.prefect_artifacts import quiet_user_error_tracebacks
    from genloop.pipeline.trials import resolve_config

    quiet_user_error_tracebacks()

    space = _parse_overrides(space_items, "--space", "KEY=VALUES, e.g. --space train.vae.beta=[0.5,1.0] or "
                                                     "--space 'train.vae.lr={low: 1e-4, high: 1e-2, log: true}'") \
        if space_items else None
    resolve_config(obj.params(), {"method": method, "n_trials": n_trials, "space": space, "metric": metric,
                                  "direction": direction, "dask_address": dask_address, "workers": workers})
    with module.prefect_api():
        result = module.sweep(project_root=str(obj.paths.root), params_file=str(obj.params_file),
                              overrides=obj.overrides or None, method=method, n_trials=n_trials, space=space,
                              metric=metric, direction=direction, dask_address=dask_address, workers=workers)
    click.echo(f"best {result['metric']} = {result['best_score']:.4g} with {result['best_params']} "
               f"(run {result['best_run_id']}, sweep parent {result['parent_run_id']}, "
               f"{len(result['workers'])} worker process(es), {result['seconds']:.0f} s)")


@main.command(name="migrate-store")
@click.option("--to", "target", required=True, metavar="URI",
              help="Target tracking store or server, e.g. http://mlflow:5000 or postgresql://user@host/mlflow.")
@click.option("--from", "source", default="sqlite:///mlflow/mlflow.db", show_default=True, metavar="URI",
              help="Source store (a relative sqlite path is relative to --root).")
@click.option("--update-aliases", is_flag=True,
              help="For registered models copied earlier: copy versions registered since and move the aliases "
                   "(champion, ...) to where the source has them now.")
@click.pass_obj
@_handled
def migrate_store(obj: Context, target: str, source: str, update_aliases: bool) -> None:
    """Copy the MLflow store to another store or server: experiments, runs (params, metric histories,
    tags with parent links remapped, status, times, artifacts) and registered models (versions, tags,
    aliases). Safe to run again: what an earlier run copied in full is skipped (--update-aliases still
    brings its models' new versions and aliases); a same-named experiment or model of other origin on the
    target stops it before anything is written."""
    import os

    from genloop.io.store_migration import migrate_store as run, resolve_store_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run otherwise
    report = run(resolve_store_uri(source, obj.paths.root), resolve_store_uri(target, obj.paths.root),
                 progress=lambda message: click.echo(f"copying {message}", err=True), update_aliases=update_aliases)
    click.echo(report.summary())


@main.group()
def data() -> None:
    """Inspect the collected data set and its DVC versions."""


@data.command()
@click.option("--limit", default=20, show_default=True, help="How many committed versions to list.")
@click.pass_obj
@_handled
def history(obj: Context, limit: int) -> None:
    """The batches data/ holds (one per collect since the last replace) and the versions git recorded."""
    from genloop.stages.collect import batch_history, data_versions
    from genloop.io.dvcio import read_dvc_hash

    batches = batch_history(obj.paths)
    current = read_dvc_hash(obj.paths.data_dvc)
    versions = data_versions(obj.paths, limit)
    state = "not versioned" if current == "untracked" else (
        "committed" if versions and versions[0].dvc_hash == current else "not committed yet")
    click.echo(f"{obj.paths.data}: {sum(b.rows for b in batches)} images in {len(batches)} batch(es); "
               f"dvc md5 {current} ({state})")
    click.echo(f"{'batch':>5}  {'rows':>8}  {'ids':<15}  source")
    for b in batches:
        click.echo(f"{b.batch:>5}  {b.rows:>8}  {f'{b.first_id}-{b.last_id}':<15}  {b.source}")
    if versions:
        click.echo("versions of data.dvc in git (newest first):")
        for v in versions:
            click.echo(f"  {v.commit}  {v.date}  {v.dvc_hash}  {v.subject}")


@main.group()
def services() -> None:
    """Team mode: PostgreSQL, an MLflow tracking server and a Prefect server in .services/ (local, 127.0.0.1)."""


@services.command(name="up")
@click.option("--timeout", type=click.FloatRange(min=1), default=240.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the servers to become healthy.")
@click.pass_obj
@_handled
def services_up(obj: Context, timeout: float) -> None:
    """Start the services (what already runs is left alone) and write .services/team.env for clients."""
    from genloop.io import services as team

    env = team.up(obj.paths.root, timeout=timeout)
    layout = team.ServicesLayout.of(obj.paths.root)
    for name, line in team.status(obj.paths.root).items():
        click.echo(f"{name:9} {line}")
    click.echo(f"MLflow UI:  {env['MLFLOW_TRACKING_URI']}\nPrefect UI: {env['PREFECT_API_URL'].removesuffix('/api')}")
    click.echo(f"clients: {layout.env_file} ({', '.join(env)}); `make run` uses it; in a shell: "
               f"set -a; . {layout.env_file}; set +a")


@services.command(name="down")
@click.pass_obj
@_handled
def services_down(obj: Context) -> None:
    """Stop what `genloop services up` started; the databases and artifacts stay in .services/."""
    from genloop.io import services as team

    stopped = team.down(obj.paths.root)
    click.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@services.command(name="status")
@click.pass_obj
@_handled
def services_status(obj: Context) -> None:
    """Whether each service runs, where, and whether it answers its health check."""
    from genloop.io import services as team

    for name, line in team.status(obj.paths.root).items():
        click.echo(f"{name:9} {line}")


from genloop.serving.command import serve_command  # noqa: E402  (imports only click at module level)

main.add_command(serve_command, name="serve")

if __name__ == "__main__":
    main()
