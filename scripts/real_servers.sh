#!/usr/bin/env bash
# Start real servers for ganflow on this machine and print the variables that point ganflow at them:
#   - a 2-node Ray cluster (`ray start --head` + a second `ray start --address`, 1 CPU each, the second
#     node with a custom resource `node2`), token authentication on by default
#   - an MLflow tracking server (SQLite backend + proxied artifacts under STATE_DIR)
#   - a Prefect API server (its own PREFECT_HOME under STATE_DIR)
# Everything listens on 127.0.0.1 (Ray's gRPC ports listen on all interfaces: hence the token).
# The servers run until Ctrl-C / SIGTERM, which stops all of them. No `ray stop` (it would stop
# every Ray process of this user on the machine, not only these).
#
#   scripts/real_servers.sh [STATE_DIR]         # default ./.ganflow/servers
#   # other shell: source STATE_DIR/env.sh (or paste the printed exports), then `ganflow pipeline`
#
# Environment (all optional): RAY_PORT (6379) RAY_DASHBOARD_PORT (8265) MLFLOW_PORT (5000)
# PREFECT_PORT (4200); MLFLOW_BACKEND (sqlite:///STATE_DIR/mlflow/mlflow.db; e.g. postgresql://user@host/db
# with psycopg2-binary installed); RAY_AUTH=token|disabled (token); GANFLOW_RAY_TMP: Ray's temp dir (short,
# Ray's socket paths must stay under ~107 bytes; default a fresh /tmp/gfray.XXXXXX);
# GANFLOW_BIN: the folder with ray/mlflow/prefect (default ../.venv/bin, else PATH).
set -euo pipefail

STATE=${1:-.ganflow/servers}
mkdir -p "$STATE" && STATE=$(cd "$STATE" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${GANFLOW_BIN:-$ROOT/.venv/bin}
[ -x "$BIN/ray" ] || BIN=$(dirname "$(command -v ray)")
PY=$BIN/python
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

RAY_PORT=${RAY_PORT:-6379}
RAY_DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
PREFECT_PORT=${PREFECT_PORT:-4200}
RAY_TMP=${GANFLOW_RAY_TMP:-$(mktemp -d /tmp/gfray.XXXXXX)}
mkdir -p "$STATE/mlflow/artifacts" "$STATE/prefect" "$RAY_TMP"
rm -f "$STATE/env.sh"  # written again once everything is up
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
# On SIGTERM a node drains for up to 30 s by default; a throwaway local cluster needs less.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-5}
unset RAY_ADDRESS PREFECT_API_URL MLFLOW_TRACKING_URI  # this shell starts servers, it is no client

if [ "${RAY_AUTH:-token}" = token ]; then
  TOKEN=$STATE/ray_auth_token  # every node and every client needs this same token
  [ -s "$TOKEN" ] || (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32))' > "$TOKEN")
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$TOKEN
else
  export RAY_AUTH_MODE=disabled
fi

PIDS=()
alive() { local p; for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
stop() {
  trap - EXIT INT TERM
  echo "stopping servers..." >&2
  rm -f "$STATE/env.sh"
  kill -TERM "${PIDS[@]}" 2>/dev/null || true
  for _ in $(seq 60); do alive || break; sleep 0.5; done
  kill -KILL "${PIDS[@]}" 2>/dev/null || true  # Ray's children share the fate of `ray start --block`
  wait 2>/dev/null || true
  if [ "$(ps -o pgid= -p $$ | tr -d ' ')" = $$ ]; then  # leading our process group: reap stragglers
    local left
    left=$(ps -eo pid=,pgid= | awk -v g=$$ '$2 == g && $1 != g {print $1}')
    [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

wait_for() {  # wait_for WHAT SECONDS CMD...: until CMD succeeds
  local what=$1 secs=$2; shift 2
  for _ in $(seq "$secs"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "$what did not come up within ${secs}s (logs in $STATE/*.log)" >&2; exit 1
}
http_ok() { "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$1"; }
two_ray_nodes() {  # `ray status` lists 2 active nodes
  local n
  n=$("$BIN/ray" status --address "127.0.0.1:$RAY_PORT" 2>/dev/null |
      awk '/^Active:/{a=1;next} /^Pending:/{a=0} a&&/node_/{n++} END{print n+0}')
  [ "$n" = 2 ]
}

# Ray head: 1 CPU. --node-ip-address 127.0.0.1 is what we ask; Ray advertises the host's routable IP.
"$BIN/ray" start --head --block --port "$RAY_PORT" --num-cpus 1 --node-ip-address 127.0.0.1 \
  --temp-dir "$RAY_TMP/head" --include-dashboard true --dashboard-host 127.0.0.1 \
  --dashboard-port "$RAY_DASHBOARD_PORT" --dashboard-agent-listen-port "$(free_port)" \
  --ray-client-server-port "$(free_port)" --object-store-memory 300000000 --disable-usage-stats \
  > "$STATE/ray-head.log" 2>&1 &
PIDS+=($!)

MLFLOW_BACKEND=${MLFLOW_BACKEND:-sqlite:///$STATE/mlflow/mlflow.db}
"$BIN/mlflow" server --backend-store-uri "$MLFLOW_BACKEND" --artifacts-destination "$STATE/mlflow/artifacts" \
  --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 > "$STATE/mlflow.log" 2>&1 &
PIDS+=($!)

PREFECT_HOME=$STATE/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false \
  "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" > "$STATE/prefect.log" 2>&1 &
PIDS+=($!)

wait_for "the Ray head" 120 "$BIN/ray" status --address "127.0.0.1:$RAY_PORT"
# Second node, same machine: its own temp dir and agent port; 1 CPU and a custom resource `node2`.
"$BIN/ray" start --block --address "127.0.0.1:$RAY_PORT" --num-cpus 1 --resources '{"node2": 1}' \
  --node-ip-address 127.0.0.1 --temp-dir "$RAY_TMP/node2" --dashboard-agent-listen-port "$(free_port)" \
  --object-store-memory 300000000 --disable-usage-stats > "$STATE/ray-node2.log" 2>&1 &
PIDS+=($!)
wait_for "the 2-node Ray cluster" 120 two_ray_nodes
wait_for "the MLflow server" 180 http_ok "http://127.0.0.1:$MLFLOW_PORT/health"
wait_for "the Prefect server" 240 http_ok "http://127.0.0.1:$PREFECT_PORT/api/health"

{
  echo "export RAY_ADDRESS=127.0.0.1:$RAY_PORT"
  if [ "$RAY_AUTH_MODE" = token ]; then
    echo "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$TOKEN"
  fi
  echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT"
  echo "export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api"
} > "$STATE/env.sh.tmp"
mv "$STATE/env.sh.tmp" "$STATE/env.sh"  # appears complete, once everything is up
echo "Servers are up (Ray dashboard http://127.0.0.1:$RAY_DASHBOARD_PORT, MLflow UI" \
     "http://127.0.0.1:$MLFLOW_PORT, Prefect UI http://127.0.0.1:$PREFECT_PORT; logs in $STATE)."
echo "In another shell (or: source $STATE/env.sh):"
cat "$STATE/env.sh"
echo "Ctrl-C stops them."
wait -n "${PIDS[@]}" || true  # returns when one server dies (or on a signal): then stop the rest
echo "a server stopped (logs in $STATE); stopping the others" >&2
exit 1
