#!/usr/bin/env bash
# A team's tracking server: Debian's PostgreSQL (15) as MLflow's backend store, an `mlflow
# server` on it, and an artifact root on a shared path. The SQLite store stays the default; a team
# points every machine at this server instead:
#
#   bash ops/team_server.sh start     # prints: export MLFLOW_TRACKING_URI=http://<host>:<port>
#   bash ops/team_server.sh status
#   bash ops/team_server.sh stop      # the server, then PostgreSQL (a fast, clean shutdown)
#
# Settings (environment):
#   PTYCHO_SERVER_DIR    where the database cluster, logs and pid files live (outputs/server)
#   PTYCHO_ARTIFACTS     the artifact root, on a path every machine sees (<dir>/artifacts)
#   PTYCHO_SERVER_HOST   the address the MLflow server listens on (127.0.0.1; 0.0.0.0 for a team)
#   PTYCHO_SERVER_PORT   its port (5001)
#   PTYCHO_PG_PORT       PostgreSQL's port on 127.0.0.1 (5433; the server is its only client)
#   PTYCHO_PYTHON        the Python with mlflow and psycopg2 (.venv/bin/python)
# Needs Debian's `postgresql` package (`apt-get install postgresql`) and the project's [team]
# extra (psycopg2). PostgreSQL refuses to run as root: as root the cluster is run by the
# `postgres` user the package creates.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(realpath -m "${PTYCHO_SERVER_DIR:-$root/outputs/server}")"
artifacts="$(realpath -m "${PTYCHO_ARTIFACTS:-$dir/artifacts}")"
host="${PTYCHO_SERVER_HOST:-127.0.0.1}"
port="${PTYCHO_SERVER_PORT:-5001}"
pg_port="${PTYCHO_PG_PORT:-5433}"
python="${PTYCHO_PYTHON:-$root/.venv/bin/python}"
data="$dir/pgdata"
sockets="$dir/sockets"
database="mlflow"

fail() { echo "team_server: $*" >&2; exit 1; }

pg_bin() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$found" ] || fail "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    echo "$found"
}

as_owner() {  # run a PostgreSQL command as the cluster's owner
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

owner() { if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi; }

backend_uri() { echo "postgresql+psycopg2://$(owner)@127.0.0.1:$pg_port/$database"; }

server_alive() { [ -f "$dir/mlflow.pid" ] && kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null; }

start_postgres() {
    local bin; bin="$(pg_bin)"
    mkdir -p "$dir" "$sockets"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir" "$sockets"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
        echo "team_server: creating the database cluster in $data"
        as_owner "$bin/initdb" -D "$data" -U "$(owner)" --auth=trust --encoding=UTF8 \
            >"$dir/initdb.log" 2>&1 || fail "initdb failed (see $dir/initdb.log)"
    fi
    if as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        echo "team_server: PostgreSQL already running on port $pg_port"
    else
        as_owner "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start \
            -o "-p $pg_port -k $sockets -c listen_addresses=127.0.0.1" >/dev/null \
            || fail "PostgreSQL did not start (see $dir/postgres.log)"
    fi
    if ! as_owner "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U "$(owner)" -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
        as_owner "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U "$(owner)" "$database"
    fi
}

start_mlflow() {
    [ -x "$python" ] || fail "no Python at $python (make install, or set PTYCHO_PYTHON)"
    "$python" -c "import mlflow, psycopg2" 2>/dev/null \
        || fail "$python lacks mlflow or psycopg2: pip install -e '.[team]'"
    mkdir -p "$artifacts"
    if server_alive; then
        echo "team_server: the MLflow server is already running (pid $(cat "$dir/mlflow.pid"))"
        return
    fi
    # its own session: stop signals the whole group (gunicorn/uvicorn and their workers)
    setsid "$python" -m mlflow server --backend-store-uri "$(backend_uri)" \
        --artifacts-destination "$artifacts" --host "$host" --port "$port" --workers 2 \
        >"$dir/mlflow.log" 2>&1 < /dev/null &
    echo $! >"$dir/mlflow.pid"
    local waited=0
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
        server_alive || fail "the MLflow server exited (see $dir/mlflow.log)"
        [ "$waited" -lt 180 ] || fail "the MLflow server did not answer in 180 s (see $dir/mlflow.log)"
        sleep 1; waited=$((waited + 1))
    done
}

stop() {
    if server_alive; then
        local pid; pid="$(cat "$dir/mlflow.pid")"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "team_server: MLflow server stopped"
    fi
    rm -f "$dir/mlflow.pid"
    if [ -f "$data/PG_VERSION" ] && as_owner "$(pg_bin)/pg_ctl" -D "$data" status >/dev/null 2>&1
    then
        as_owner "$(pg_bin)/pg_ctl" -D "$data" -m fast -w stop >/dev/null
        echo "team_server: PostgreSQL stopped"
    fi
}

case "${1:-}" in
    start)
        start_postgres
        start_mlflow
        shown="$host"; [ "$host" = "0.0.0.0" ] && shown="$(hostname -f)"
        echo "team_server: MLflow on PostgreSQL ($(backend_uri)), artifacts in $artifacts"
        echo "export MLFLOW_TRACKING_URI=http://$shown:$port"
        ;;
    stop) stop ;;
    status)
        if server_alive; then echo "MLflow server: running (pid $(cat "$dir/mlflow.pid"), port $port)"
        else echo "MLflow server: stopped"; fi
        if [ -f "$data/PG_VERSION" ] && as_owner "$(pg_bin)/pg_ctl" -D "$data" status >/dev/null 2>&1
        then echo "PostgreSQL: running (port $pg_port, $data)"; else echo "PostgreSQL: stopped"; fi
        ;;
    uri) echo "http://$host:$port" ;;
    *) echo "usage: bash ops/team_server.sh start|stop|status|uri" >&2; exit 2 ;;
esac
