#!/usr/bin/env bash
# The local servers tiercache's integration tests, benchmarks and demo run against.
#
#   scripts/services.sh up       start what is not running (idempotent)
#   scripts/services.sh up kafka only that server (also redis, postgresql)
#   scripts/services.sh down     stop what this script started (by pid)
#   scripts/services.sh status   print each server and its state
#
# Servers (all on 127.0.0.1; test servers, not for production), one script
# each under scripts/services/, each also runnable alone with up|down|status:
#   Redis Cluster  redis.sh     6 redis-server nodes, 3 masters + 3 replicas, ports BASE..BASE+5
#   Kafka 3.9.1    kafka.sh     one KRaft broker+controller (client port, controller port)
#   PostgreSQL 15  postgres.sh  own data directory, database `tiercache`, user `postgres`,
#                               trust authentication from 127.0.0.1 (no password), fsync off
# Their shared helpers (paths, ports, logging, waits) are in scripts/services/common.sh.
#
# Environment (defaults are what the tests use):
#   TIERCACHE_RUN_DIR                <repo>/.run   everything a run creates
#   TIERCACHE_DEPS_DIR               <repo>/.deps  Kafka jars (scripts/setup.sh)
#   TIERCACHE_REDIS_PORT_BASE        7000
#   TIERCACHE_KAFKA_PORT             9092
#   TIERCACHE_KAFKA_CONTROLLER_PORT  9093
#   TIERCACHE_PG_PORT                55432
#   TIERCACHE_PG_BIN                 /usr/lib/postgresql/15/bin
set -uo pipefail

services="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/services"
# shellcheck source-path=SCRIPTDIR source=services/common.sh
. "$services/common.sh"

redis() { "$services/redis.sh" "$1"; }
kafka() { "$services/kafka.sh" "$1"; }
postgresql() { "$services/postgres.sh" "$1"; }

case "${1:-}" in
  up)
    mkdir -p "$run_dir"
    # `up kafka` (or redis, postgresql) starts only that server: a drill that
    # stopped one server must not have the others checked or recreated.
    if [ -n "${2:-}" ]; then
      case $2 in
        redis | kafka | postgresql) "$2" up; exit $? ;;
        *) echo "usage: $0 up [redis|kafka|postgresql]" >&2; exit 2 ;;
      esac
    fi
    # Start all three even if one fails, so one message names every problem.
    rc=0
    redis up || rc=1
    kafka up || rc=1
    postgresql up || rc=1
    ((rc == 0)) || fail "some servers failed to start (see above); 'make services-down' stops the others"
    exit $rc
    ;;
  down)
    kafka down
    redis down
    postgresql down
    exit 0
    ;;
  status)
    redis status
    kafka status
    postgresql status
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
