"""Champions from the MLflow Model Registry as ONNX files for ``genloop serve``.

``models:/genloop-vae@champion`` and ``models:/genloop-gan@champion`` are downloaded from the
store genloop tracks to (``$MLFLOW_TRACKING_URI``, else params' ``mlflow.tracking_uri``: a SQLite file
or a tracking server, whose artifact proxy serves the files) into a folder that lives as long as the server.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genloop.config import MlflowConfig
from genloop.serving.settings import CompanionGone, ServingError
from genloop.io.tracking import sqlite_store


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    path: Path


def store_uri(config: MlflowConfig) -> str:
    """The tracking URI as genloop.io.tracking resolves it (the environment first), without creating anything."""
    from genloop.io.tracking import env_server

    return env_server() or config.tracking_uri


def _require_server(uri: str) -> None:
    """Fail at once, and clearly, when a tracking server is down (MLflow itself retries for minutes)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10):
            return
    except Exception as exc:  # refused, timeout, 5xx
        raise ServingError(f"the MLflow tracking server {uri} does not answer ({exc}); start it "
                           "(`make services-up` in team mode) or serve files with --files") from None


def _client(config: MlflowConfig, root: Path):
    from genloop.io.tracking import client_at, is_server, tracking_uri

    uri = tracking_uri(config, root)
    if is_server(uri):
        _require_server(uri)
    return client_at(uri)


def _existing_store_client(config: MlflowConfig, root: Path):
    """The registry client, or ServingError when the SQLite store is missing (serving never creates one)."""
    store = sqlite_store(config, root)
    if store is not None and not store.is_file():
        raise ServingError(f"no MLflow store at {store}; run `genloop run` (or `genloop export`) first, "
                           "or serve files with --files")
    return _client(config, root)


def _champion(client, config: MlflowConfig, name: str):
    """The version holding ``champion``, or ServingError saying how to set one."""
    from genloop.io import promotion

    try:
        version = promotion.current_champion(client, name)
    except promotion.PromotionError as exc:
        raise ServingError(str(exc)) from None
    if version is None:
        raise ServingError(f"{name} has no champion in {store_uri(config)}; "
                           f"`genloop promote {name} VERSION` sets one, or serve files with --files")
    return version


def has_champions(config: MlflowConfig, root: Path, names: list[str]) -> bool:
    """True when the store exists and every name has a ``champion``; never creates a store."""
    from genloop.io import promotion

    store = sqlite_store(config, root)
    if store is not None and not store.is_file():
        return False
    client = _client(config, root)
    try:
        return all(promotion.current_champion(client, name) is not None for name in names)
    except promotion.PromotionError:
        return False


def download_champions(config: MlflowConfig, root: Path, names: list[str], dst: Path) -> dict[str, Champion]:
    """Each name's champion ONNX file (refusing a version whose parity check did not pass)."""
    from genloop.io import promotion

    client = _existing_store_client(config, root)
    champions = {}
    for name in names:
        version = _champion(client, config, name)
        if version.tags.get(promotion.PARITY_TAG) != "true":
            raise ServingError(f"{name}@champion is v{version.version}, whose ONNX parity check did not pass")
        try:
            path = promotion.download_onnx(f"models:/{name}/{version.version}", dst / name)
        except promotion.PromotionError as exc:
            raise ServingError(str(exc)) from None
        champions[name] = Champion(name, str(version.version), path)
    return champions


class ChampionSource:
    """The registry side of a live server: which version is ``champion`` now, and its ONNX file.

    Downloads go to one ``genloop-champions-*`` temporary folder that ``close()`` removes (the app
    calls it at shutdown, SIGTERM included). Methods block (MLflow): call them off the event loop.
    """

    registry = True

    def __init__(self, config: MlflowConfig, root: Path, names: list[str], encoders: dict[str, str] | None = None):
        import tempfile

        self.config, self.root, self.names = config, root, list(names)
        # encoder name -> the decoder name whose champion version carries it (as an artifact of its run):
        # the encoder has no alias of its own, so it always follows its decoder's champion.
        self.encoders = dict(encoders or {})
        self._client = _existing_store_client(config, root)
        self._folder = tempfile.TemporaryDirectory(prefix="genloop-champions-")
        self.folder = Path(self._folder.name)
        self._fetches = 0

    def latest(self, name: str) -> str:
        """The version holding ``champion`` now (for an encoder: its decoder's)."""
        return str(_champion(self._client, self.config, self.encoders.get(name, name)).version)

    def _version(self, name: str, version: str):
        try:
            return self._client.get_model_version(name, str(version))
        except Exception as exc:  # MlflowException: deleted meanwhile, store unreachable
            raise ServingError(f"{name} v{version}: not readable from the registry ({exc})") from None

    def fetch(self, name: str, version: str) -> Path:
        """The ONNX file of ``name`` v``version``, refused unless its parity check passed (for an encoder:
        the one logged beside its decoder's v``version``)."""
        from genloop.io import promotion

        if name in self.encoders:
            return self._fetch_encoder(name, version)
        found = self._version(name, version)
        if found.tags.get(promotion.PARITY_TAG) != "true":
            raise ServingError(f"{name}@champion is v{version}, whose ONNX parity check did not pass")
        self._fetches += 1
        try:
            return promotion.download_onnx(f"models:/{name}/{version}", self.folder / name / f"v{version}-{self._fetches}")
        except promotion.PromotionError as exc:
            raise ServingError(str(exc)) from None

    def _fetch_encoder(self, name: str, version: str) -> Path:
        from genloop.io import promotion, tracking

        decoder = self.encoders[name]
        found = self._version(decoder, version)
        artifact = found.tags.get(promotion.ENCODER_TAG)
        if not artifact:
            raise CompanionGone(f"{decoder} v{version} carries no encoder (exported without one); "
                                f"{name} is not served with it")
        self._fetches += 1
        try:
            return tracking.download_artifacts(f"runs:/{found.run_id}/{artifact}",
                                               self.folder / name / f"v{version}-{self._fetches}")
        except (*tracking.registry_errors(), OSError) as exc:
            raise ServingError(f"{name}: the encoder of {decoder} v{version} cannot be downloaded ({exc})") from None

    def champions(self) -> dict[str, Champion]:
        """Every name's champion, downloaded (what the server starts with), and each encoder its decoder's
        champion carries (a champion without one serves no encoder: nothing fails)."""
        found = {}
        for name in self.names:
            version = self.latest(name)
            found[name] = Champion(name, version, self.fetch(name, version))
        for name, decoder in self.encoders.items():
            if decoder in found:
                try:
                    found[name] = Champion(name, found[decoder].version, self.fetch(name, found[decoder].version))
                except CompanionGone:
                    pass  # this champion was exported without an encoder
        return found

    def close(self) -> None:
        self._folder.cleanup()


class FileSource:
    """Files given on the command line: a load request re-reads the file; nothing to poll."""

    registry = False

    def __init__(self, models: dict[str, Path], versions: dict[str, str], default_version: str):
        self.models, self.versions, self.default_version = dict(models), dict(versions), default_version

    def latest(self, name: str) -> str:
        return self.versions.get(name, self.default_version)

    def fetch(self, name: str, version: str) -> Path:
        path = Path(self.models[name])
        if not path.is_file():
            raise ServingError(f"{name}: {path} is not there any more")
        return path

    def close(self) -> None:
        pass
