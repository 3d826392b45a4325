#!/usr/bin/env bash
# Shared by the scripts of the local servers (scripts/services/redis.sh,
# kafka.sh, postgres.sh): paths, ports, logging, process and port helpers,
# wait loops, and the `up|down|status` entry point of a script run alone.
# Sourced, not run. The environment it reads is described in scripts/services.sh.
# shellcheck disable=SC2034  # the settings below are used by the scripts that source this file

[ -n "${tiercache_services_common:-}" ] && return 0
tiercache_services_common=1

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
run_dir="${TIERCACHE_RUN_DIR:-$repo/.run}"
deps_dir="${TIERCACHE_DEPS_DIR:-$repo/.deps}"
redis_base="${TIERCACHE_REDIS_PORT_BASE:-7000}"
kafka_port="${TIERCACHE_KAFKA_PORT:-9092}"
kafka_ctrl_port="${TIERCACHE_KAFKA_CONTROLLER_PORT:-9093}"
pg_port="${TIERCACHE_PG_PORT:-55432}"
pg_bin="${TIERCACHE_PG_BIN:-/usr/lib/postgresql/15/bin}"

say() { echo "services: $*"; }
fail() { echo "services: $*" >&2; return 1; }

# ---- process helpers -------------------------------------------------------

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

# stop_pid PID NAME: SIGTERM (after SIGCONT, in case a test left it stopped),
# then SIGKILL after 20 s.
stop_pid() {
  local pid=$1 name=$2
  kill -CONT "$pid" 2>/dev/null
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    [ -d "/proc/$pid" ] || { say "$name stopped"; return 0; }
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null
  say "$name killed (did not stop within 20 s)"
}

log_tail() { [ -f "$1" ] && { echo "--- last lines of $1:" >&2; tail -n "${2:-15}" "$1" >&2; }; }

# ---- entry point of a server's script run alone ----------------------------

# service_main PREFIX [up|down|status]: runs PREFIX_up, PREFIX_down or
# PREFIX_status with the exit codes of scripts/services.sh (up: the server's
# result; down: always 0; a usage error: 2).
service_main() {
  local prefix=$1
  case "${2:-}" in
    up) mkdir -p "$run_dir"; "${prefix}_up"; exit $? ;;
    down) "${prefix}_down"; exit 0 ;;
    status) "${prefix}_status"; exit $? ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
  esac
}
