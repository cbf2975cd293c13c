# Helpers for ctl scripts (sourced by helpers/ctl_setup.sh).

# redirect_output <label>: append this script's stdout/stderr to $LOG_DIR/<label>.{stdout,stderr}.log
redirect_output() {
  mkdir -p "$LOG_DIR"
  exec >>"$LOG_DIR/$1.stdout.log" 2>>"$LOG_DIR/$1.stderr.log"
}

# pid_alive <pid>: the process exists and is not a zombie (an exited child nobody has reaped yet).
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}

# pid_guard <pidfile> <name>: exit 0 if <name> already runs; drop a stale pidfile.
pid_guard() {
  local pidfile=$1 name=$2 pid
  [ -f "$pidfile" ] || return 0
  pid=$(head -1 "$pidfile")
  if [ -n "$pid" ] && pid_alive "$pid"; then
    echo "$(date -u) $name is already running (pid $pid)"
    exit 0
  fi
  echo "$(date -u) removing stale pidfile $pidfile"
  rm -f "$pidfile"
}

# wait_pid <pid> <timeout-seconds>: wait for the process to exit; 1 if it still runs at the deadline.
wait_pid() {
  local pid=$1 timeout=$2 n=0
  while pid_alive "$pid"; do
    if [ "$n" -ge $((timeout * 10)) ]; then
      return 1
    fi
    sleep 0.1
    n=$((n + 1))
  done
  return 0
}

# kill_and_wait <pidfile> [timeout-seconds, default 25]: TERM, wait, then KILL; removes the pidfile.
kill_and_wait() {
  local pidfile=$1 timeout=${2:-25} pid
  if [ ! -f "$pidfile" ]; then
    echo "$(date -u) pidfile $pidfile does not exist"
    return 0
  fi
  pid=$(head -1 "$pidfile")
  if [ -n "$pid" ] && pid_alive "$pid"; then
    echo "$(date -u) stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid "$pid" "$timeout"; then
      echo "$(date -u) pid $pid still running after ${timeout}s, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_pid "$pid" 5 || true
    fi
  fi
  rm -f "$pidfile"
}
