#!/usr/bin/env bash
# AgentFlow in distributed mode on this machine's PostgreSQL and Redis (`make up`).
#
# Starts, in the background, each with a pid file and a log file under $AGENTFLOW_HOME/run/:
#   api           agentflow serve --port $AGENTFLOW_PORT          (REST API + Studio)
#   worker-runs   agentflow worker --queues runs,agentflow.control  (run drivers, beat ticks)
#   worker-llm    agentflow worker --queues agentflow.llm          (llm + router nodes)
#   worker-image  agentflow worker --queues agentflow.image
#   worker-io     agentflow worker --queues agentflow.db,agentflow.api
#   beat          agentflow beat                                   (schedule ticks; optional)
#   flower        celery flower on $AGENTFLOW_FLOWER_PORT
# then waits until the API's /health answers, every worker answers a Celery ping and Flower
# answers, prints what runs where, and returns. The split is for isolation and scaling only:
# no task waits on another, so `agentflow worker` with no arguments runs everything too
# (docs/runtime.md).
#
# Idempotent: a part whose pid file names a live process is left alone. `make down` stops all.
#
# Environment (all optional):
#   DATABASE_URL   postgresql://postgres@127.0.0.1:5432/agentflow (the database is created if missing)
#   REDIS_URL      redis://127.0.0.1:6379/0
#   AGENTFLOW_HOME $HOME/.agentflow          AGENTFLOW_PORT 8000      AGENTFLOW_FLOWER_PORT 5555
#   AGENTFLOW_HOST 127.0.0.1 (API bind)      AGENTFLOW_FLOWER_ADDRESS 127.0.0.1 (Flower bind)
#   AGENTFLOW_UP_TIMEOUT 60 (seconds to wait for everything)
#   AGENTFLOW_{RUNS,LLM,IMAGE,IO}_CONCURRENCY  worker pool sizes (4, 4, 2, 4)
#   AGENTFLOW_UP_KEEP_ON_FAILURE=1  leave the parts running when start-up fails (default: stop
#                                   the ones this call started, keep their logs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${AGENTFLOW_VENV_BIN:-$ROOT/.venv/bin}"
AF="$BIN/agentflow"
PY="$BIN/python"
CELERY="$BIN/celery"
for exe in "$AF" "$PY" "$CELERY"; do
  [ -x "$exe" ] || { echo "up: $exe not found - run 'make venv' first (or use 'make up')" >&2; exit 1; }
done

export DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/agentflow}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export AGENTFLOW_HOME="${AGENTFLOW_HOME:-$HOME/.agentflow}"
export AGENTFLOW_PORT="${AGENTFLOW_PORT:-8000}"
export AGENTFLOW_FLOWER_PORT="${AGENTFLOW_FLOWER_PORT:-5555}"
export PYTHONUNBUFFERED=1
FLOWER_ADDRESS="${AGENTFLOW_FLOWER_ADDRESS:-127.0.0.1}"
TIMEOUT="${AGENTFLOW_UP_TIMEOUT:-60}"
RUN_DIR="$AGENTFLOW_HOME/run"
mkdir -p "$RUN_DIR"

API_HOST="${AGENTFLOW_HOST:-127.0.0.1}"
case "$API_HOST" in 0.0.0.0|::|"[::]") PROBE_HOST=127.0.0.1 ;; *) PROBE_HOST="$API_HOST" ;; esac
case "$FLOWER_ADDRESS" in 0.0.0.0|::|"") FLOWER_PROBE=127.0.0.1 ;; *) FLOWER_PROBE="$FLOWER_ADDRESS" ;; esac
# The parts, in start order; run_part knows their commands.
PARTS=(api worker-runs worker-llm worker-image worker-io beat flower)
run_part() {  # exec's the part's command (in a subshell prepared by start_part)
  case "$1" in
    api)          exec setsid "$AF" serve --port "$AGENTFLOW_PORT" ;;
    worker-runs)  exec setsid "$AF" worker --queues runs,agentflow.control \
                    --concurrency "${AGENTFLOW_RUNS_CONCURRENCY:-4}" --hostname 'driver@%h' ;;
    worker-llm)   exec setsid "$AF" worker --queues agentflow.llm \
                    --concurrency "${AGENTFLOW_LLM_CONCURRENCY:-4}" --hostname 'llm@%h' ;;
    worker-image) exec setsid "$AF" worker --queues agentflow.image \
                    --concurrency "${AGENTFLOW_IMAGE_CONCURRENCY:-2}" --hostname 'image@%h' ;;
    worker-io)    exec setsid "$AF" worker --queues agentflow.db,agentflow.api \
                    --concurrency "${AGENTFLOW_IO_CONCURRENCY:-4}" --hostname 'io@%h' ;;
    beat)         exec setsid "$AF" beat ;;
    flower)       exec setsid "$CELERY" --app agentflow.workers.app:celery_app flower \
                    --port="$AGENTFLOW_FLOWER_PORT" --address="$FLOWER_ADDRESS" ;;
  esac
}
# Celery node names (without @host) that must answer a ping
declare -A NODE=([worker-runs]=driver [worker-llm]=llm [worker-image]=image [worker-io]=io)

safe_url() { sed -E 's#(://[^:/@]+):[^@/]*@#\1:***@#' <<<"$1"; }

# A live process (not a zombie) whose command line is one of ours.
pid_alive() {
  local pid="$1" state
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null || echo Z)"
    [ "$state" != Z ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq 'agentflow|celery' || return 1
  fi
}
running_pid() {  # prints the pid of a running part, else fails
  local f="$RUN_DIR/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(tr -dc 0-9 <"$f")"
  pid_alive "$pid" && echo "$pid"
}

log_tail() {
  local log="$RUN_DIR/$1.log"
  echo "---- last lines of $log ----" >&2
  tail -n "${2:-25}" "$log" >&2 2>/dev/null || echo "(no log)" >&2
  echo "----" >&2
}

STARTED=() ALREADY=()
cleanup_started() {
  if [ "${#STARTED[@]}" -gt 0 ] && [ "${AGENTFLOW_UP_KEEP_ON_FAILURE:-0}" != 1 ]; then
    echo "up: stopping what this call started: ${STARTED[*]} (logs are kept in $RUN_DIR)" >&2
    bash "$ROOT/scripts/down.sh" "${STARTED[@]}" >&2 || true
  elif [ "${#STARTED[@]}" -gt 0 ]; then
    echo "up: AGENTFLOW_UP_KEEP_ON_FAILURE=1: leaving ${STARTED[*]} running; stop with 'make down'" >&2
  fi
}
fail() {  # fail PART MESSAGE
  echo "" >&2
  echo "up: FAILED: $1: $2" >&2
  if [[ " ${STARTED[*]} ${ALREADY[*]} " == *" $1 "* ]] && [ -f "$RUN_DIR/$1.log" ]; then log_tail "$1"; fi
  cleanup_started
  exit 1
}
trap 'echo "up: interrupted" >&2; cleanup_started; exit 130' INT TERM

# ------------------------------------------------------------------ services and database
port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
# Another program on our ports would answer our health checks: refuse before starting anything.
if ! running_pid api >/dev/null && port_busy "$PROBE_HOST" "$AGENTFLOW_PORT"; then
  fail api "port $AGENTFLOW_PORT is already in use by another program (set AGENTFLOW_PORT)"
fi
if ! running_pid flower >/dev/null && port_busy "$FLOWER_PROBE" "$AGENTFLOW_FLOWER_PORT"; then
  fail flower "port $AGENTFLOW_FLOWER_PORT is already in use by another program (set AGENTFLOW_FLOWER_PORT)"
fi
echo "up: database $(safe_url "$DATABASE_URL"), broker $(safe_url "$REDIS_URL"), home $AGENTFLOW_HOME"

"$PY" - <<'PY' || fail redis "Redis does not answer at the REDIS_URL above (is it running? scripts/services.sh starts it)"
import os, sys
import redis
try:
    redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=3, socket_timeout=3).ping()
except Exception as exc:
    print(f"up: redis: {exc}", file=sys.stderr)
    sys.exit(1)
PY

case "$DATABASE_URL" in
  postgres://*|postgresql://*|postgresql+*://*)
    "$PY" - <<'PY' || fail postgres "cannot reach PostgreSQL or create the database named in DATABASE_URL"
import os, sys
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

url = make_url(os.environ["DATABASE_URL"].replace("postgres://", "postgresql://", 1))
name = url.database
if not name:
    sys.exit("up: DATABASE_URL names no database")
try:  # the database itself exists: nothing to do
    psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False),
                    connect_timeout=5).close()
    sys.exit(0)
except psycopg.OperationalError as exc:
    if "does not exist" not in str(exc):
        print(f"up: postgres: {str(exc).strip()}", file=sys.stderr)
        sys.exit(1)
last = None
for admin_db in ("postgres", "template1"):
    admin = url.set(drivername="postgresql", database=admin_db).render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                print(f"up: created database {name}")
        sys.exit(0)
    except psycopg.Error as exc:
        last = exc
print(f"up: postgres: cannot create database {name}: {str(last).strip()}", file=sys.stderr)
sys.exit(1)
PY
    ;;
esac

echo "up: applying migrations"
"$AF" migrate || fail migrate "'agentflow migrate' failed (see above)"

# ------------------------------------------------------------------ start the parts
start_part() {
  local name="$1" pid log="$RUN_DIR/$1.log"
  if pid="$(running_pid "$name")"; then
    ALREADY+=("$name")
    echo "up: $name already running (pid $pid)"
    return
  fi
  rm -f "$RUN_DIR/$name.pid"
  [ -f "$log" ] && mv -f "$log" "$log.1"  # keep the previous run's log
  echo "== $(date '+%Y-%m-%d %H:%M:%S') scripts/up.sh starts $name" >"$log"
  # setsid: each part leads its own process group, so down.sh also reaches a worker's pool
  # children. No terminal, no inherited pipes: up.sh returns while the parts keep running.
  (cd "$RUN_DIR" && exec </dev/null >>"$log" 2>&1 && run_part "$name") &
  echo $! >"$RUN_DIR/$name.pid"
  STARTED+=("$name")
  echo "up: started $name (pid $!)"
}
for part in "${PARTS[@]}"; do start_part "$part"; done

# A part that was already running keeps the port it was started with (up.env records it).
recorded() {
  if [ -f "$RUN_DIR/up.env" ]; then sed -n "s/^$1=//p" "$RUN_DIR/up.env" | head -1; fi
}
for pair in api:AGENTFLOW_PORT flower:AGENTFLOW_FLOWER_PORT; do
  part="${pair%%:*}" var="${pair#*:}"
  old="$(recorded "$var")"
  if [[ " ${ALREADY[*]} " == *" $part "* ]] && [ -n "$old" ] && [ "$old" != "${!var}" ]; then
    echo "up: note: the running $part listens on port $old, not ${!var} ('make down' first to move it)"
    printf -v "$var" '%s' "$old"
  fi
done
API_URL="http://$PROBE_HOST:$AGENTFLOW_PORT"
FLOWER_URL="http://$FLOWER_PROBE:$AGENTFLOW_FLOWER_PORT"

declare -A WHAT
WHAT[api]="$API_URL  (REST API + Studio)"
WHAT[worker-runs]="queues runs,agentflow.control (run drivers, beat ticks)"
WHAT[worker-llm]="queue agentflow.llm (llm, router nodes)"
WHAT[worker-image]="queue agentflow.image (image nodes)"
WHAT[worker-io]="queues agentflow.db,agentflow.api (db, api nodes)"
WHAT[beat]="celery beat -> agentflow.control (schedule ticks; optional)"
WHAT[flower]="$FLOWER_URL  (Celery dashboard)"

# ------------------------------------------------------------------ wait until all answer
declare -A PID
for part in "${PARTS[@]}"; do PID[$part]="$(tr -dc 0-9 <"$RUN_DIR/$part.pid")"; done
export UP_PIDS="" UP_NODES=""
for part in "${PARTS[@]}"; do UP_PIDS+="$part=${PID[$part]} "; done
for part in "${!NODE[@]}"; do UP_NODES+="$part=${NODE[$part]} "; done
export UP_API_URL="$API_URL" UP_FLOWER_URL="$FLOWER_URL" UP_TIMEOUT="$TIMEOUT"

echo "up: waiting for the API, the workers and Flower (up to ${TIMEOUT}s)"
set +e
WAIT_OUT="$("$PY" - <<'PY'
"""Polls until every part answers; prints `ok` or `fail PART REASON` as its last line."""
import os, socket, sys, time, urllib.request

pids = dict(item.split("=", 1) for item in os.environ["UP_PIDS"].split())
nodes = dict(item.split("=", 1) for item in os.environ["UP_NODES"].split())
api, flower = os.environ["UP_API_URL"], os.environ["UP_FLOWER_URL"]
deadline = time.monotonic() + float(os.environ["UP_TIMEOUT"])


def alive(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(int(pid), 0)
            return True
        except OSError:
            return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except Exception:
        return False


from celery import Celery

app = Celery(broker=os.environ["REDIS_URL"])
host = socket.gethostname()
pending = {"api", "flower", *nodes}
while True:
    for part, pid in pids.items():
        if not alive(pid):
            print(f"fail {part} exited during start-up")
            sys.exit(1)
    if "api" in pending and http_ok(api + "/health"):
        pending.discard("api")
        print("up:   api answers /health", file=sys.stderr)
    if "flower" in pending and http_ok(flower + "/healthcheck"):
        pending.discard("flower")
        print("up:   flower answers", file=sys.stderr)
    waiting_nodes = [p for p in nodes if p in pending]
    if waiting_nodes:
        try:
            replies = app.control.ping(timeout=1.0) or []
        except Exception:
            replies = []
        answered = {name for reply in replies for name in reply}
        for part in waiting_nodes:
            if f"{nodes[part]}@{host}" in answered:
                pending.discard(part)
                print(f"up:   {part} answers a Celery ping as {nodes[part]}@{host}", file=sys.stderr)
    if not pending:
        break
    if time.monotonic() > deadline:
        first = sorted(pending, key=list(pids).index)[0]
        print(f"fail {first} did not answer within {os.environ['UP_TIMEOUT']}s "
              f"(still waiting for: {', '.join(sorted(pending))})")
        sys.exit(1)
    time.sleep(0.5)
time.sleep(1.0)  # beat has nothing to ping: make sure it survived its own start-up
for part, pid in pids.items():
    if not alive(pid):
        print(f"fail {part} exited during start-up")
        sys.exit(1)
print("ok")
PY
)"
WAIT_RC=$?
set -e
LAST="$(tail -n 1 <<<"$WAIT_OUT")"
if [ "$WAIT_RC" -ne 0 ] || [ "$LAST" != ok ]; then
  part="$(awk '{print $2}' <<<"$LAST")"
  reason="$(cut -d' ' -f3- <<<"$LAST")"
  fail "${part:-up}" "${reason:-the start-up check failed: $WAIT_OUT}"
fi
trap - INT TERM

READY="$("$PY" -c '
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except Exception:
    print("no answer")
' "$API_URL/health/ready" 2>/dev/null || true)"

# ------------------------------------------------------------------ what runs where
cat >"$RUN_DIR/up.env" <<EOF
# written by scripts/up.sh $(date '+%Y-%m-%d %H:%M:%S')
DATABASE_URL=$(safe_url "$DATABASE_URL")
REDIS_URL=$(safe_url "$REDIS_URL")
AGENTFLOW_PORT=$AGENTFLOW_PORT
AGENTFLOW_FLOWER_PORT=$AGENTFLOW_FLOWER_PORT
EOF

if [ -f "$ROOT/studio/out/index.html" ] || [ -n "${AGENTFLOW_STUDIO_DIR:-}" ]; then
  STUDIO="$API_URL/"
else
  STUDIO="not built (make studio), $API_URL/ shows a placeholder"
fi
echo ""
echo "AgentFlow is up (distributed mode)"
printf '  %-13s %-8s %-62s %s\n' PART PID "WHAT / WHERE" LOG
for part in "${PARTS[@]}"; do
  mark=""
  [[ " ${ALREADY[*]} " == *" $part "* ]] && mark="*"
  printf '  %-13s %-8s %-62s %s\n' "$part" "${PID[$part]}$mark" "${WHAT[$part]}" "$RUN_DIR/$part.log"
done
[ "${#ALREADY[@]}" -gt 0 ] && echo "  (* was already running: left as it was)"
echo ""
echo "  API      $API_URL          (readiness: $API_URL/health/ready -> ${READY:-no answer})"
echo "  Docs     $API_URL/docs"
echo "  Studio   $STUDIO"
echo "  Flower   $FLOWER_URL"
echo "  Database $(safe_url "$DATABASE_URL")"
echo "  Broker   $(safe_url "$REDIS_URL")"
echo ""
if [ "$AGENTFLOW_HOME" = "$HOME/.agentflow" ]; then
  echo "  Stop with: make down"
else
  echo "  Stop with: make down   (with AGENTFLOW_HOME=$AGENTFLOW_HOME, or: AGENTFLOW_HOME=$AGENTFLOW_HOME bash scripts/down.sh)"
fi
