#!/usr/bin/env bash
# Stops what scripts/up.sh started (`make down`): SIGTERM to each part's process group, then
# SIGKILL after a grace period; removes the pid files and says what it stopped.
#
#   bash scripts/down.sh              every part
#   bash scripts/down.sh api beat     only those parts
#
# Environment: AGENTFLOW_HOME ($HOME/.agentflow; the pid files are in its run/ folder),
# AGENTFLOW_DOWN_GRACE (seconds between SIGTERM and SIGKILL, default 20).
#
# Order: the API, beat, Flower and the run drivers get SIGTERM first, while the node workers
# still serve the node tasks a finishing driver waits on; then the node workers. A driver
# still busy after the grace period is killed: its run resumes from its last checkpoint when
# the message is redelivered (acks_late), so nothing is lost but time.
set -uo pipefail

AGENTFLOW_HOME="${AGENTFLOW_HOME:-$HOME/.agentflow}"
RUN_DIR="$AGENTFLOW_HOME/run"
GRACE="${AGENTFLOW_DOWN_GRACE:-20}"
ALL=(api beat flower worker-runs worker-llm worker-image worker-io)
FIRST=" api beat flower worker-runs "

if [ "$#" -gt 0 ]; then
  for name in "$@"; do
    [[ " ${ALL[*]} " == *" $name "* ]] || { echo "down: unknown part '$name' (parts: ${ALL[*]})" >&2; exit 2; }
  done
  WANT=("$@")
else
  WANT=("${ALL[@]}")
fi

# Alive and not a zombie (a part whose parent exited may linger as a zombie until reaped).
alive() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    [ "$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  fi
  return 0
}
ours() {  # the pid is still one of AgentFlow's processes (not a recycled pid)
  [ -r "/proc/$1/cmdline" ] || return 0
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -Eq 'agentflow|celery'
}
group_members() {  # live processes of the process group led by $1 (a worker's pool children)
  local pid
  for pid in $(pgrep -g "$1" 2>/dev/null); do alive "$pid" && echo "$pid"; done
}
is_leader() { [ "$(ps -o pgid= -p "$1" 2>/dev/null | tr -d ' ')" = "$1" ]; }
signal_part() {  # signal_part SIG PID: the whole group when the part leads one
  if is_leader "$2"; then kill "-$1" -- "-$2" 2>/dev/null || kill "-$1" "$2" 2>/dev/null
  else kill "-$1" "$2" 2>/dev/null; fi
}
gone() { ! alive "$1" && [ -z "$(group_members "$1")" ]; }

STOPPED=() KILLED=() STALE=()
declare -A PIDS
stop_batch() {  # stop_batch NAME...: TERM all, wait up to GRACE, KILL the rest
  local name pid waiting
  waiting=()
  for name in "$@"; do
    pid="${PIDS[$name]}"
    signal_part TERM "$pid"
    waiting+=("$name")
  done
  local ticks=$((GRACE * 4)) still
  while [ "${#waiting[@]}" -gt 0 ] && [ "$ticks" -gt 0 ]; do
    still=()
    for name in "${waiting[@]}"; do gone "${PIDS[$name]}" || still+=("$name"); done
    waiting=("${still[@]}")
    [ "${#waiting[@]}" -gt 0 ] && sleep 0.25
    ticks=$((ticks - 1))
  done
  for name in "${waiting[@]}"; do
    pid="${PIDS[$name]}"
    signal_part KILL "$pid"
    for pid in $(group_members "$pid"); do kill -KILL "$pid" 2>/dev/null; done
    KILLED+=("$name")
  done
  for name in "$@"; do
    for _ in $(seq 1 20); do gone "${PIDS[$name]}" && break; sleep 0.1; done
    rm -f "$RUN_DIR/$name.pid"
    STOPPED+=("$name (pid ${PIDS[$name]})")
  done
}

first=() second=()
for name in "${WANT[@]}"; do
  f="$RUN_DIR/$name.pid"
  [ -f "$f" ] || continue
  pid="$(tr -dc 0-9 <"$f")"
  if [ -z "$pid" ] || ! alive "$pid" || ! ours "$pid"; then
    rm -f "$f"
    STALE+=("$name")
    continue
  fi
  PIDS[$name]="$pid"
  if [[ "$FIRST" == *" $name "* ]]; then first+=("$name"); else second+=("$name"); fi
done

[ "${#first[@]}" -gt 0 ] && stop_batch "${first[@]}"
[ "${#second[@]}" -gt 0 ] && stop_batch "${second[@]}"
[ "$#" -eq 0 ] && rm -f "$RUN_DIR/up.env"

for item in "${STOPPED[@]}"; do echo "down: stopped $item"; done
[ "${#KILLED[@]}" -gt 0 ] && echo "down: ${KILLED[*]} did not stop within ${GRACE}s of SIGTERM: killed (SIGKILL)"
[ "${#STALE[@]}" -gt 0 ] && echo "down: not running (stale pid file removed): ${STALE[*]}"
if [ "${#STOPPED[@]}" -eq 0 ] && [ "${#STALE[@]}" -eq 0 ]; then
  echo "down: nothing to stop (no pid files in $RUN_DIR)"
fi
exit 0
