#!/usr/bin/env bash
# The local PostgreSQL 15 on 127.0.0.1 port TIERCACHE_PG_PORT (55432): its own
# data directory (<run dir>/postgres), database `tiercache`, user `postgres`,
# trust authentication from 127.0.0.1 (no password), fsync off. Binaries from
# TIERCACHE_PG_BIN (/usr/lib/postgresql/15/bin). A test server, not for production.
#
#   scripts/services/postgres.sh up|down|status   (scripts/services.sh runs it
#   as `up postgresql`)
set -uo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

pg_dir="$run_dir/postgres"
# PostgreSQL refuses to run as root: as root, initdb and the server run as the
# `postgres` user; as anyone else, as that user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_pid() { pid_of "$pg_dir/data/postmaster.pid" "postgres"; }
pg_answers() { "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -t 2; }

pg_prepare_dir() {
  [ -d "$pg_dir" ] && return 0
  mkdir -p "$run_dir"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$run_dir"; then
    # The postgres user cannot reach the run folder (a parent directory is
    # closed to others): keep the data under /var/tmp and link it here.
    local real
    real="/var/tmp/tiercache-pg-$(echo "$run_dir" | md5sum | cut -c1-12)"
    rm -rf "$real" && mkdir -p "$real" && ln -sfn "$real" "$pg_dir"
  else
    mkdir -p "$pg_dir"
  fi
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$pg_dir/"
  return 0
}

# The PostgreSQL tools get the real path (the postgres user may not traverse
# the run folder when it is a link to /var/tmp).
pg_resolve() { [ -L "$pg_dir" ] && pg_dir="$(readlink -f "$pg_dir")"; return 0; }

pg_up() {
  local pid
  if pid=$(pg_pid); then
    if wait_for 10 pg_answers; then say "postgresql already running on 127.0.0.1:$pg_port (pid $pid)"; return 0; fi
    fail "postgresql (pid $pid) is running but not accepting connections"; log_tail "$pg_dir/postgres.log"; return 1
  fi
  [ -x "$pg_bin/postgres" ] || { fail "PostgreSQL 15 is missing ($pg_bin/postgres); run make setup"; return 1; }
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    fail "the 'postgres' user is missing; run make setup (installs postgresql-15)"; return 1
  fi
  require_free_port "$pg_port" "postgresql" TIERCACHE_PG_PORT || return 1
  pg_prepare_dir
  pg_resolve
  if [ ! -f "$pg_dir/data/PG_VERSION" ]; then
    rm -rf "$pg_dir/data"
    if ! as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$pg_dir/initdb.log" 2>&1; then
      fail "initdb failed"; log_tail "$pg_dir/initdb.log"; return 1
    fi
  fi
  if ! as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 start \
      -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$pg_dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      >"$pg_dir/pg_ctl.log" 2>&1; then
    fail "postgresql exited at start"; log_tail "$pg_dir/postgres.log"; return 1
  fi
  local exists
  exists=$("$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'tiercache'" 2>&1) ||
    { fail "cannot query postgresql: $exists"; return 1; }
  if [ "$exists" != 1 ]; then
    "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres tiercache ||
      { fail "createdb tiercache failed"; return 1; }
  fi
  say "postgresql up on 127.0.0.1:$pg_port (database tiercache, user postgres, trust auth, pid $(pg_pid))"
}

pg_down() {
  local pid
  pid=$(pg_pid) || return 0
  kill -CONT "$pid" 2>/dev/null
  if as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
    say "postgresql stopped"
  else
    stop_pid "$pid" "postgresql"
  fi
}

pg_status() {
  local pid
  if pid=$(pg_pid); then
    if pg_answers; then echo "postgresql 127.0.0.1:$pg_port up    pid $pid"
    else echo "postgresql 127.0.0.1:$pg_port not accepting connections (pid $pid)"; fi
  else
    echo "postgresql 127.0.0.1:$pg_port down"
  fi
}

pg_resolve

# Run alone (not sourced): up|down|status.
[[ "${BASH_SOURCE[0]}" != "$0" ]] || service_main pg "$@"
