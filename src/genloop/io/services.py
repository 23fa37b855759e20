"""Team mode: PostgreSQL, an MLflow tracking server and a Prefect server, all local to the project.

``genloop services up`` starts them in ``.services/`` (a PostgreSQL cluster of its own on a free
port, never the system's 5432 one; MLflow and Prefect on its databases ``mlflow`` and ``prefect``;
MLflow serving artifacts through its proxy), all bound to 127.0.0.1, and writes ``.services/team.env``
(MLFLOW_TRACKING_URI, PREFECT_API_URL), which the Makefile exports. ``down`` stops exactly what ``up``
started (servers by recorded PID and by the marker in their environment, PostgreSQL with ``pg_ctl stop``)
and keeps the data.

What survives a lost or damaged ``state.json`` (ports and PIDs, checked against a schema): the database
password lives in ``.services/credentials`` (0600), which ``up`` reuses (and, when that file is lost,
replaces with a new password set on the cluster in single-user mode); the servers are found in the
process table; PostgreSQL's own port is in its ``postmaster.pid``. ``up`` and ``down`` take
``.services/.lock``, so two at once run one after the other.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genloop.config import describe_errors
from genloop.io import atomic
from genloop.errors import GenloopError
from genloop.io.lock import pid_alive, project_lock
from genloop.io.telemetry import quiet_env

SERVERS = ("mlflow", "prefect")
DATABASES = ("mlflow", "prefect")
DB_USER = "genloop"
# Tried first, so URLs stay the same from one `up` to the next; a taken one is replaced by a free one.
PREFERRED_PORTS = {"postgres": 55432, "mlflow": 5050, "prefect": 4250}
HEALTH_PATHS = {"mlflow": "/health", "prefect": "/api/health"}
RUN_AS_WHEN_ROOT = "postgres"  # initdb and postgres refuse to run as root; Debian's package creates this user
MARKER = "GENLOOP_SERVICES"  # in each server's environment: MARKER=<the .services folder>, found by `down`
LOCK_NAME = ".lock"  # in .services/: one `up` or `down` at a time


class ServicesError(GenloopError):
    """The team services cannot start or stop; the message says why and what to do."""


class DamagedStateError(ServicesError):
    """``.services/state.json`` is not the JSON ``up`` writes; ``down`` works without it."""


@dataclass(frozen=True)
class ServicesLayout:
    """Where team mode keeps its state, under ``<project>/.services`` (gitignored)."""
    root: Path

    @classmethod
    def of(cls, project_root: Path) -> "ServicesLayout":
        return cls(Path(project_root).resolve() / ".services")

    @property
    def pg_data(self) -> Path:
        return self.root / "pg"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def env_file(self) -> Path:
        return self.root / "team.env"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


# ---- PostgreSQL binaries ------------------------------------------------------------------------

def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<v>/bin`` (Debian) holding initdb, else the folder of ``initdb`` on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: _version_key(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def ensure_postgres() -> Path:
    """PostgreSQL's binaries, installed with apt-get (Debian's ``postgresql``) when missing and we may."""
    found = postgres_bin()
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise ServicesError("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH) and "
                            "there is no apt-get here: install PostgreSQL 13 or newer, then run this again")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None or subprocess.run([sudo, "-n", "true"], capture_output=True).returncode != 0:
            raise ServicesError("PostgreSQL is not installed: run `sudo apt-get install -y postgresql`, "
                                "then this again")
        prefix = [sudo, "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("installing PostgreSQL (apt-get install -y postgresql) ...", file=sys.stderr)
    install = [*prefix, apt, "install", "-y", "--no-install-recommends", "postgresql"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([*prefix, apt, "update"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ServicesError(f"apt-get install postgresql failed: {done.stderr.strip()[-500:]}")
    found = postgres_bin()
    if found is None:
        raise ServicesError("apt-get installed postgresql but no initdb was found under /usr/lib/postgresql/*/bin")
    return found


def _run_as() -> list[str]:
    """The prefix that runs PostgreSQL's tools as a non-root user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam(RUN_AS_WHEN_ROOT)
    except KeyError:
        raise ServicesError(f"running as root, and PostgreSQL refuses to run as root, but there is no "
                            f"{RUN_AS_WHEN_ROOT!r} user to run it as: run this as a normal user") from None
    return [_runuser(), "-u", RUN_AS_WHEN_ROOT, "--"]


def _runuser() -> str:
    """util-linux's runuser, which lives in sbin: a root shell's PATH may lack it (``env -i``, cron, CI
    runners), so the usual places are tried too."""
    for candidate in (shutil.which("runuser"), "/usr/sbin/runuser", "/sbin/runuser"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServicesError("running as root, and PostgreSQL refuses to run as root, but no runuser was found "
                        "(on PATH, /usr/sbin or /sbin) to run it as the postgres user: install util-linux, "
                        "or run this as a normal user")


def _give_to_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, RUN_AS_WHEN_ROOT, RUN_AS_WHEN_ROOT)


# ---- state: ports, password, PIDs -----------------------------------------------------------------

def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Ports(BaseModel):
    model_config = ConfigDict(extra="forbid")
    postgres: int = Field(ge=1, le=65535)
    mlflow: int = Field(ge=1, le=65535)
    prefect: int = Field(ge=1, le=65535)


class _State(BaseModel):
    """What state.json may hold: the ports, the servers' PIDs (and, from earlier versions, the password)."""
    model_config = ConfigDict(extra="forbid")
    ports: _Ports | None = None
    pids: dict[Literal["mlflow", "prefect"], int] = {}
    password: str | None = Field(None, min_length=1)


def _read_state(layout: ServicesLayout) -> dict:
    if not layout.state.is_file():
        return {}
    try:
        return _State.model_validate(json.loads(layout.state.read_text())).model_dump(exclude_none=True)
    except ValidationError as exc:
        why = describe_errors(exc)
    except (OSError, ValueError) as exc:  # unreadable, not JSON
        why = str(exc)
    raise DamagedStateError(
        f"{layout.state} is damaged ({why}); `genloop services down` stops the services without it (from the "
        f"process table and the PostgreSQL cluster), then `genloop services up` starts them again and writes a new "
        f"one. The database password is kept apart, in {layout.credentials}") from None


def _write_state(layout: ServicesLayout, state: dict) -> None:
    """Ports and PIDs, 0600 from the start; the password stays in the credentials file."""
    atomic.write_json(layout.state, {k: state[k] for k in ("ports", "pids") if k in state}, mode=0o600)


def _set_aside(layout: ServicesLayout) -> Path:
    """Move a damaged state.json out of the way (kept for a look), so the next `up` writes a fresh one."""
    aside = layout.state.with_name(f"state.json.damaged-{int(time.time())}")
    layout.state.replace(aside)
    return aside


def _password(layout: ServicesLayout, state: dict, bin_dir: Path) -> str:
    """The database password: the credentials file's; else an earlier state.json's (moved into the file); else a
    new one, set on an existing cluster first (its old one is lost with the file)."""
    if layout.credentials.is_file():
        password = layout.credentials.read_text().strip()
        if password:
            return password
    password = state.get("password") or secrets.token_urlsafe(24)
    if "password" not in state and (layout.pg_data / "PG_VERSION").is_file():
        _reset_password(bin_dir, layout, password)
    atomic.write_text(layout.credentials, password + "\n", mode=0o600)
    return password


def _reset_password(bin_dir: Path, layout: ServicesLayout, password: str) -> None:
    """Set ``password`` on the cluster in single-user mode (no login needed), the cluster and its servers stopped."""
    print(f"note: {layout.credentials} is missing: setting a new database password on the cluster in "
          f"{layout.pg_data}", file=sys.stderr)
    _stop_found(layout)  # servers still connected with the lost password
    if _postgres_running(bin_dir, layout):
        _pg(bin_dir, "pg_ctl", "-D", str(layout.pg_data), "-m", "fast", "-w", "-t", "60", "stop")
    done = subprocess.run([*_run_as(), str(bin_dir / "postgres"), "--single", "-D", str(layout.pg_data), "postgres"],
                          input=f"ALTER ROLE {DB_USER} PASSWORD '{password}';\n", capture_output=True, text=True,
                          timeout=120, cwd="/")
    if done.returncode != 0 or "ERROR:" in done.stdout + done.stderr:
        raise ServicesError(f"could not set a new database password on {layout.pg_data}: "
                            f"{(done.stderr or done.stdout).strip()[-500:]}")


def _postmaster_port(layout: ServicesLayout) -> int | None:
    """The port a running cluster listens on (line 4 of its postmaster.pid), whatever state.json says."""
    try:
        return int((layout.pg_data / "postmaster.pid").read_text().splitlines()[3])
    except (OSError, IndexError, ValueError):
        return None


def _urls(state: dict) -> dict[str, str]:
    ports = state["ports"]
    return {"mlflow": f"http://127.0.0.1:{ports['mlflow']}",
            "prefect": f"http://127.0.0.1:{ports['prefect']}",
            "postgres": f"127.0.0.1:{ports['postgres']}"}


def database_url(state: dict, database: str, driver: str) -> str:
    return (f"postgresql+{driver}://{DB_USER}:{state['password']}@127.0.0.1:{state['ports']['postgres']}/{database}")


# MLflow's HTTP retries for team.env: by default 7 retries with a backoff factor of 2, about 4 minutes per
# call, so a training whose server (or its PostgreSQL) stopped hung for ~8 minutes before failing. The
# servers are local: 3 retries (1 + 2 + 4 s) ride out a restart and fail in seconds when one is down.
CLIENT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def team_env(state: dict) -> dict[str, str]:
    """What clients need to use the services (the contents of team.env)."""
    urls = _urls(state)
    return {"MLFLOW_TRACKING_URI": urls["mlflow"], "PREFECT_API_URL": f"{urls['prefect']}/api", **CLIENT_RETRIES}


# ---- processes -------------------------------------------------------------------------------------

def _is_ours(pid: int | None, name: str, port: int) -> bool:
    """The recorded PID is still the server we started (not a recycled PID): name and port on its command line."""
    if not pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():  # no /proc (macOS): trust the PID
        return True
    args = cmdline.read_bytes().split(b"\0")
    return any(name.encode() in a for a in args) and str(port).encode() in args


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except Exception:  # refused, reset, timeout, 5xx while starting
        return False


def _stop_pid(pid: int, timeout: float = 20.0, group: bool = True) -> None:
    """SIGTERM the process group the server leads (it was started in a session of its own), or the process
    alone (``group=False``), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.2)


def _found_servers(layout: ServicesLayout) -> dict[int, str]:
    """This project's MLflow and Prefect server processes (workers too) in the process table, recorded or not:
    pid -> mlflow, prefect or "" (a worker that does not say). Found by the marker ``up`` puts in their environment, or (servers started before
    the marker) by the artifacts folder on MLflow's command line and PREFECT_HOME in Prefect's environment."""
    signs = [f"{MARKER}={layout.root}".encode(), f"PREFECT_HOME={layout.prefect_home}".encode()]
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        pid = int(proc.name)
        if pid == os.getpid() or not cmdline[0] or cmdline[0].split(b"/")[-1].startswith(b"postgres"):
            continue
        if any(sign in environ for sign in signs) or str(layout.artifacts).encode() in cmdline:
            if pid_alive(pid):
                found[pid] = next((n for n in SERVERS if any(n.encode() in arg for arg in cmdline)), "")
    return found


def _stop_found(layout: ServicesLayout, keep: set[int] = frozenset()) -> list[str]:
    """Stop the servers of this project found in the process table, but those in process groups ``keep``;
    returns their names."""
    found = {pid: name for pid, name in _found_servers(layout).items() if _pgid(pid) not in keep}
    for pid in found:
        if _pgid(pid) == pid:  # a server we started leads its own group: its workers go with it
            _stop_pid(pid)
    for pid in found:
        if pid_alive(pid):
            _stop_pid(pid, group=False)
    return sorted(set(found.values()) - {""})


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _spawn(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def _server_command(name: str, state: dict, layout: ServicesLayout) -> tuple[list[str], dict[str, str]]:
    port = str(state["ports"][name])
    env = quiet_env()
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):  # a client setting, wrong for a server
        env.pop(key, None)
    env[MARKER] = str(layout.root)
    if name == "mlflow":
        env.update(MLFLOW_BACKEND_STORE_URI=database_url(state, "mlflow", "psycopg"),  # not on the command line
                   MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", port, "--workers", "1",
                "--serve-artifacts", "--artifacts-destination", str(layout.artifacts)], env
    env.update(PREFECT_HOME=str(layout.prefect_home),
               PREFECT_API_DATABASE_CONNECTION_URL=database_url(state, "prefect", "asyncpg"))
    return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port], env


# ---- PostgreSQL ------------------------------------------------------------------------------------

def _pg(bin_dir: Path, tool: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([*_run_as(), str(bin_dir / tool), *args], capture_output=True, text=True, timeout=timeout,
                          cwd="/")
    if check and done.returncode != 0:
        raise ServicesError(f"{tool} failed: {(done.stderr or done.stdout).strip()[-800:]}")
    return done


def _postgres_running(bin_dir: Path, layout: ServicesLayout) -> bool:
    return (layout.pg_data / "PG_VERSION").is_file() and \
        _pg(bin_dir, "pg_ctl", "-D", str(layout.pg_data), "status", check=False).returncode == 0


def _init_cluster(bin_dir: Path, layout: ServicesLayout, password: str) -> None:
    layout.pg_data.mkdir(parents=True)
    pwfile = layout.root / ".pgpass-init"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    _give_to_postgres(layout.pg_data, pwfile)
    try:
        if subprocess.run([*_run_as(), "test", "-w", str(layout.pg_data)], capture_output=True).returncode != 0:
            raise ServicesError(f"the {RUN_AS_WHEN_ROOT!r} user cannot reach {layout.pg_data}; let it traverse the "
                                "project's parent folders (chmod o+x) or run as a normal user")
        _pg(bin_dir, "initdb", "-D", str(layout.pg_data), "-U", DB_USER, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-locale")
    except BaseException:
        shutil.rmtree(layout.pg_data, ignore_errors=True)  # so the next `up` starts from scratch
        raise
    finally:
        pwfile.unlink(missing_ok=True)


def _start_postgres(bin_dir: Path, layout: ServicesLayout, state: dict) -> None:
    log = layout.log("postgres")
    log.touch()
    _give_to_postgres(log)
    options = (f"-p {state['ports']['postgres']} -c listen_addresses=127.0.0.1 "
               f"-c unix_socket_directories='{layout.pg_data}'")
    _pg(bin_dir, "pg_ctl", "-D", str(layout.pg_data), "-l", str(log), "-o", options, "-w", "-t", "120", "start",
        check=False)
    if not _postgres_running(bin_dir, layout):
        raise ServicesError(f"PostgreSQL did not start; see {log}")


def _pg_ready(bin_dir: Path, port: int) -> bool:
    return subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode == 0


def _create_databases(state: dict, layout: ServicesLayout) -> None:
    import psycopg

    conninfo = f"host=127.0.0.1 port={state['ports']['postgres']} user={DB_USER} dbname=postgres"
    try:
        with psycopg.connect(conninfo, password=state["password"], autocommit=True, connect_timeout=10) as conn:
            have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in DATABASES:
                if name not in have:
                    conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise ServicesError(f"PostgreSQL on 127.0.0.1:{state['ports']['postgres']} refused the password in "
                            f"{layout.credentials} ({str(exc).strip().splitlines()[-1]}); if that file was replaced, "
                            "remove it and run `genloop services up` again: a new password is then set on the "
                            "cluster") from None


# ---- clients ---------------------------------------------------------------------------------------

UNREACHABLE_WORDS = ("Connection refused", "Failed to establish a new connection", "Max retries exceeded",
                     "RemoteDisconnected", "Connection aborted", "Connection reset")


def unreachable_tracking_server(exc: BaseException) -> str | None:
    """One line for an MLflow call that failed because the tracking server stopped answering, or answered
    503 because its database is down, else None (MLflow reports either as an ``MlflowException`` naming
    the URL, after its own HTTP retries)."""
    seen = 0
    while exc is not None and seen < 8:
        text = str(exc)
        found = re.search(r"API request to (https?://[^/\s]+)", text)
        if found and re.search(r"too many 503 error responses|status code 503", text):
            return _database_down(found.group(1))
        if found and any(word in text for word in UNREACHABLE_WORDS):
            return (f"the MLflow tracking server {found.group(1)} stopped answering, so this command failed; "
                    "runs it had started stay RUNNING or FAILED on the server. Start the server again "
                    "(`make services-up` in team mode) and rerun: finished stages are skipped.")
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _database_down(server: str) -> str:
    """The tracking server answers but cannot work (MLflow's 503 is a database error): name its database,
    from one request of our own (the failed call's answer is lost inside MLflow's retries)."""
    cause = "its database stopped answering"
    try:
        urllib.request.urlopen(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default", timeout=10)
    except urllib.error.HTTPError as answer:
        body = answer.read(4000).decode("utf-8", "replace")
        where = re.search(r'server at \\?"?([\w.:-]+)\\?"?, port (\d+)', body)
        if "postgres" in body.lower() or "psycopg" in body:
            on = f" on {where.group(1)}:{where.group(2)}" if where else ""
            cause = f"its database (PostgreSQL{on}) is not running or refuses connections"
    except OSError:
        pass
    return (f"the MLflow tracking server {server} answers, but {cause}, so this command failed; runs it had "
            "started stay RUNNING on the server. Start PostgreSQL again (`make services-up` or `genloop services "
            "up` in team mode; `genloop services status` shows what is down) and rerun: finished stages are skipped.")


# ---- up / down / status ----------------------------------------------------------------------------

def _choose_ports(state: dict, running: set[str]) -> dict[str, int]:
    """Keep the recorded ports (a running service keeps its own); replace a taken one by a free one."""
    ports, taken = {}, set()
    for name, preferred in PREFERRED_PORTS.items():
        port = int(state.get("ports", {}).get(name, preferred))
        if name not in running and (not _port_free(port) or port in taken):
            port = preferred if _port_free(preferred) and preferred not in taken else _free_port()
        ports[name] = port
        taken.add(port)
    return ports


def up(project_root: Path, timeout: float = 240.0) -> dict[str, str]:
    """Start whatever is not running yet (twice is fine, also at once); returns team.env's variables."""
    layout = ServicesLayout.of(project_root)
    bin_dir = ensure_postgres()
    for folder in (layout.root, layout.logs, layout.artifacts, layout.prefect_home):
        folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        layout.root.chmod(0o755)  # the postgres user must reach pg/ and its log
        layout.logs.chmod(0o755)
    with project_lock(layout.root, "genloop services up", wait=timeout + 120, name=LOCK_NAME):
        state = _usable_state(project_root, layout)
        state["password"] = _password(layout, state, bin_dir)
        state.setdefault("pids", {})
        running = {n for n in SERVERS if _is_ours(state["pids"].get(n), n, state.get("ports", {}).get(n, 0))}
        _stop_found(layout, keep={state["pids"][n] for n in running})  # unrecorded: a lost state's servers
        if _postgres_running(bin_dir, layout):
            running.add("postgres")
            port = _postmaster_port(layout)
            if port is not None:
                state.setdefault("ports", {})["postgres"] = port
        state["ports"] = _choose_ports(state, running)
        _write_state(layout, state)
        _start_postgres_if_needed(bin_dir, layout, state, running)
        _start_servers(layout, state, running, project_root, timeout)
        env = team_env(state)
        atomic.write_text(layout.env_file, "".join(f"{k}={v}\n" for k, v in env.items()))
    return env


def _usable_state(project_root: Path, layout: ServicesLayout) -> dict:
    """state.json's contents; a damaged one is set aside after stopping everything (`down`), and {} returned."""
    try:
        return _read_state(layout)
    except DamagedStateError as exc:
        print(f"note: {str(exc).partition(';')[0]}: stopping this project's services to start them afresh",
              file=sys.stderr)
        down(project_root)
        return {}


def _start_postgres_if_needed(bin_dir: Path, layout: ServicesLayout, state: dict, running: set[str]) -> None:
    if not (layout.pg_data / "PG_VERSION").is_file():
        _init_cluster(bin_dir, layout, state["password"])
    if "postgres" not in running:
        _start_postgres(bin_dir, layout, state)
    if not _pg_ready(bin_dir, state["ports"]["postgres"]):
        raise ServicesError(f"PostgreSQL on 127.0.0.1:{state['ports']['postgres']} is not ready; "
                            f"see {layout.log('postgres')}")
    _create_databases(state, layout)


def _start_servers(layout: ServicesLayout, state: dict, running: set[str], project_root: Path,
                   timeout: float) -> None:
    urls = _urls(state)
    for name in SERVERS:
        if name not in running:
            command, env = _server_command(name, state, layout)
            state["pids"][name] = _spawn(command, env, layout.log(name), project_root)
            _write_state(layout, state)
    deadline = time.monotonic() + timeout
    for name in SERVERS:
        while not _healthy(urls[name] + HEALTH_PATHS[name]):
            if not pid_alive(state["pids"][name]):
                raise ServicesError(f"the {name} server exited while starting; see {layout.log(name)}")
            if time.monotonic() > deadline:
                raise ServicesError(f"the {name} server did not become healthy in {timeout:g} s; "
                                    f"see {layout.log(name)}")
            time.sleep(0.5)


def stop(project_root: Path, name: str) -> bool:
    """Stop one server (``mlflow`` or ``prefect``) that ``up`` started; True if it was running."""
    layout = ServicesLayout.of(project_root)
    state = _read_state(layout)
    pid = state.get("pids", {}).get(name)
    was = _is_ours(pid, name, state.get("ports", {}).get(name, 0))
    if was:
        _stop_pid(pid)
    if state.get("pids", {}).pop(name, None) is not None:
        _write_state(layout, state)
    return was


def down(project_root: Path) -> list[str]:
    """Stop what ``up`` started (servers by PID and from the process table, then PostgreSQL); the data stays.
    Works without a usable state.json (a damaged one is set aside). Returns what was stopped."""
    layout = ServicesLayout.of(project_root)
    if not layout.root.is_dir():
        return []
    with project_lock(layout.root, "genloop services down", wait=300, name=LOCK_NAME):
        layout.env_file.unlink(missing_ok=True)  # clients must not point at stopped servers
        try:
            stopped = [name for name in SERVERS if stop(project_root, name)]
        except DamagedStateError as exc:
            aside = _set_aside(layout)
            print(f"note: {str(exc).partition(';')[0]}; moved to {aside.name}, stopping what the process table "
                  "shows", file=sys.stderr)
            stopped = []
        stopped += [name for name in _stop_found(layout) if name not in stopped]
        bin_dir = postgres_bin()
        if bin_dir is not None and _postgres_running(bin_dir, layout):
            _pg(bin_dir, "pg_ctl", "-D", str(layout.pg_data), "-m", "fast", "-w", "-t", "60", "stop")
            stopped.append("postgres")
    return stopped


def status(project_root: Path) -> dict[str, str]:
    """One line per service: running (and healthy, its database too) or stopped, with its address."""
    layout = ServicesLayout.of(project_root)
    state = _read_state(layout)
    if "ports" not in state:
        return {name: "never started" for name in ("postgres", *SERVERS)}
    urls = _urls(state)
    bin_dir = postgres_bin()
    lines = {}
    pg_up = bin_dir is not None and _postgres_running(bin_dir, layout) and _pg_ready(bin_dir, state["ports"]["postgres"])
    lines["postgres"] = (f"running on {urls['postgres']} (data in {layout.pg_data})" if pg_up else "stopped")
    for name in SERVERS:
        pid = state.get("pids", {}).get(name)
        if _is_ours(pid, name, state["ports"][name]):
            health = "healthy" if _healthy(urls[name] + HEALTH_PATHS[name]) else "not answering"
            database = "" if pg_up else f", but its database (PostgreSQL on {urls['postgres']}) is down"
            lines[name] = f"running at {urls[name]} (pid {pid}, {health}{database})"
        else:
            lines[name] = "stopped"
    return lines
