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

# pid_of, port_in_use, port_owner, require_free_port, wait_for, log_tail
# shellcheck source-path=SCRIPTDIR source=../lib/process.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/process.sh"

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
