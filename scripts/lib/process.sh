# Process and port helpers shared by scripts/services/*.sh and
# scripts/platform.sh. Sourced only; the sourcing script defines fail().
# shellcheck shell=bash

# pid_of PIDFILE PATTERN: prints the pid if it is alive and its command line
# matches PATTERN (so a recycled pid is never taken for ours).
pid_of() {
  local pidfile=$1 pattern=$2 pid
  [ -r "$pidfile" ] || return 1
  pid=$(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9')
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern" || return 1
  echo "$pid"
}

port_in_use() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

port_owner() {
  local owner
  owner=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -n1 |
    sed -E 's/users:\(\("([^"]*)",pid=([0-9]*)/\1 (pid \2)/')
  echo "${owner:-another process}"
}

# require_free_port PORT NAME ENVVAR
require_free_port() {
  if port_in_use "$1"; then
    fail "port $1 ($2) is already in use by $(port_owner "$1"); stop that process or choose another port with $3"
    return 1
  fi
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

log_tail() { [ -f "$1" ] && { echo "--- last lines of $1:" >&2; tail -n "${2:-15}" "$1" >&2; }; }
