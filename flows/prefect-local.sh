#!/usr/bin/env bash
# Start or stop a local Prefect server (SQLite under $PREFECT_HOME) and the process serving the
# genloop deployments. Only processes started here (recorded by PID) are ever stopped.
#   flows/prefect-local.sh up | down | status
set -euo pipefail
set -m  # job control: each background process leads its own group, so `down` can stop it whole
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${GENLOOP_VENV_BIN:-$root/.venv/bin}"
export PREFECT_HOME="${PREFECT_HOME:-$root/.prefect}"
port="${PREFECT_PORT:-4200}"
export PREFECT_API_URL="http://127.0.0.1:$port/api"
export PREFECT_API_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///$PREFECT_HOME/prefect.db"
export PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 DO_NOT_TRACK=true
export PREFECT_RUNNER_POLL_FREQUENCY="${PREFECT_RUNNER_POLL_FREQUENCY:-2}"
export PATH="$bin:$PATH"
mkdir -p "$PREFECT_HOME"
server_pid="$PREFECT_HOME/server.pid"
serve_pid="$PREFECT_HOME/serve.pid"

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for URL SECONDS WHAT LOG
  for _ in $(seq "$2"); do
    if "$bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  echo "error: $3 did not become healthy in $2 s; see $4" >&2
  return 1
}

up() {
  if alive "$server_pid"; then
    echo "Prefect server already running (pid $(cat "$server_pid"))"
  else
    "$bin/prefect" server start --host 127.0.0.1 --port "$port" </dev/null >"$PREFECT_HOME/server.log" 2>&1 &
    echo $! >"$server_pid"
    wait_for "$PREFECT_API_URL/health" 90 "Prefect server" "$PREFECT_HOME/server.log"
  fi
  if alive "$serve_pid"; then
    echo "deployments already served (pid $(cat "$serve_pid"))"
  else
    cd "$root"
    "$bin/python" -m flows.serve </dev/null >"$PREFECT_HOME/serve.log" 2>&1 &
    echo $! >"$serve_pid"
    served=no
    for _ in $(seq 60); do
      if "$bin/prefect" deployment inspect genloop-pipeline/local >/dev/null 2>&1; then served=yes; break; fi
      alive "$serve_pid" || { echo "error: python -m flows.serve exited; see $PREFECT_HOME/serve.log" >&2; exit 1; }
      sleep 1
    done
    [[ $served == yes ]] || { echo "error: genloop-pipeline/local not registered after 60 tries; see $PREFECT_HOME/serve.log" >&2; exit 1; }
  fi
  served_line="$(grep -m1 '^serving ' "$PREFECT_HOME/serve.log" 2>/dev/null || true)"
  cat <<MSG
Prefect UI:   http://127.0.0.1:$port
${served_line:-serving genloop-pipeline/local}
Run the loop: PREFECT_API_URL=$PREFECT_API_URL .venv/bin/prefect deployment run 'genloop-pipeline/local' --watch
Sweep:        PREFECT_API_URL=$PREFECT_API_URL .venv/bin/prefect deployment run 'genloop-sweep/local' --watch
Stop:         make prefect-down
MSG
}

down() {
  for f in "$serve_pid" "$server_pid"; do
    if alive "$f"; then
      pid="$(cat "$f")"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  echo "stopped"
}

status() {
  alive "$server_pid" && echo "server: running (pid $(cat "$server_pid"))" || echo "server: stopped"
  alive "$serve_pid" && echo "deployments: served (pid $(cat "$serve_pid"))" || echo "deployments: not served"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
