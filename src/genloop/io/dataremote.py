"""Share data/ through the project's default DVC remote: push it after a collect, and fetch it into a
fresh clone instead of collecting again, so every clone of the team trains on the version data.dvc names.

Nothing happens without a default remote (``dvc remote add -d NAME URL``, in .dvc/config or
.dvc/config.local). A push that fails is a warning, never a lost collect; pulled data whose md5
differs from data.dvc's is an error.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from genloop.io import dvcio
from genloop.paths import ProjectPaths

logger = logging.getLogger(__name__)


class PulledDataMismatchError(dvcio.DvcError):
    """What the remote sent is not the data data.dvc records (a corrupted or overwritten remote)."""


@dataclass(frozen=True)
class Transfer:
    remote: str
    done: bool
    message: str


def _last_line(proc) -> str:
    """DVC's cause (its last ERROR line), not the support link it prints after it."""
    lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines()
             if line.strip() and not line.strip().startswith("Having any troubles?")]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines)[-1] if lines else f"exit code {proc.returncode}"


def _remote_for(paths: ProjectPaths) -> str | None:
    if not dvcio.is_dvc_repo(paths.root) or not paths.data_dvc.exists():
        return None
    return dvcio.default_remote(paths.root)


def push_data(paths: ProjectPaths) -> Transfer | None:
    """``dvc push data.dvc`` to the default remote; None when there is none. A failure is logged as a
    warning naming the remote and returned (done=False): data/ and data.dvc stay as collected."""
    remote = _remote_for(paths)
    if remote is None:
        return None
    proc = dvcio.run_dvc(["push", paths.data_dvc.name], cwd=paths.root, check=False)  # not --quiet: it hides the cause
    if proc.returncode != 0:
        message = (f"data/ is collected, but `dvc push` to DVC remote {remote!r} failed ({_last_line(proc)}); "
                   f"other clones cannot pull it until `dvc push {paths.data_dvc.name}` succeeds")
        logger.warning(message)
        return Transfer(remote, False, message)
    message = f"pushed data/ to DVC remote {remote!r}"
    logger.info(message)
    return Transfer(remote, True, message)


def pull_missing_data(paths: ProjectPaths) -> Transfer | None:
    """When data/ is missing, data.dvc names a version and a default remote is set: fetch that version
    and check it out, then check its md5 against data.dvc. None when there is nothing to pull.

    A failed fetch (remote unreachable, version never pushed) is a warning (done=False): the caller
    collects from the source instead. Pulled data with another md5 is removed and raised.
    """
    if paths.images.exists():
        return None
    remote = _remote_for(paths)
    expected = dvcio.read_dvc_hash(paths.data_dvc) if remote else "untracked"
    if remote is None or expected == "untracked":
        return None
    target = paths.data_dvc.name
    # fetch (the slow, network part) only fills the cache; checkout then places data/ in one local step
    proc = dvcio.run_dvc(["fetch", "--quiet", target], cwd=paths.root, check=False)
    if proc.returncode == 0:
        proc = dvcio.run_dvc(["checkout", "--quiet", "--force", target], cwd=paths.root, check=False)
    if proc.returncode != 0:
        message = (f"data/ is missing and `dvc pull` of {target} ({expected}) from DVC remote {remote!r} failed "
                   f"({_last_line(proc)}); collecting from the source instead")
        logger.warning(message)
        return Transfer(remote, False, message)
    got = dvcio.dir_md5(paths.data)
    if got != expected:
        shutil.rmtree(paths.data, ignore_errors=True)
        purged = dvcio.purge_unverified(paths.root, expected)  # or DVC serves them from its cache from now on
        raise PulledDataMismatchError(
            f"data/ pulled from DVC remote {remote!r} has md5 {got}, but {paths.data_dvc} records {expected}; "
            f"the remote holds other bytes under that hash (removed data/ and {len(purged)} object(s) that failed "
            "the check from the DVC cache; repair the remote and run again, or `genloop collect --source SPEC` "
            "to collect anew)")
    message = f"pulled data/ ({expected}) from DVC remote {remote!r} instead of collecting"
    logger.info(message)
    return Transfer(remote, True, message)
