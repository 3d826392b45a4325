#!/usr/bin/env bash
# The demo platform's own PostgreSQL 15 pair: a primary and one physical
# streaming replica (separate from the test PostgreSQL of scripts/services.sh).
#
#   scripts/platform.sh up           start what is not running (idempotent): the
#                                    primary (database `demo`, demo/schema.sql and
#                                    demo/seed.sql applied), then the replica (made
#                                    by pg_basebackup the first time); ends with
#                                    one DSN line per server:
#                                      primary host=127.0.0.1 port=15442 dbname=demo user=posts
#                                      replica host=127.0.0.1 port=15443 dbname=demo user=feeds
#   scripts/platform.sh down         stop the replica, then the primary
#   scripts/platform.sh status       each server's state and the replica's lag
#   scripts/platform.sh reset        down, then delete both data directories
#   scripts/platform.sh lag MS       replica applies WAL MS ms late
#                                    (recovery_min_apply_delay; 0 = no delay)
#   scripts/platform.sh slow MS      demo.read_delay_ms = MS on the replica only
#                                    (demo_read_delay() sleeps that long; 0 = none)
#   scripts/platform.sh replay-lag   the replica's replay lag in ms (one integer):
#                                    age of the oldest commit received but not yet
#                                    applied, 0 when caught up
#   scripts/platform.sh stats        pg_stat_statements calls: feeds_queries_replica,
#                                    feeds_queries_primary, posts_queries_primary
#   scripts/platform.sh stats-reset  pg_stat_statements_reset() on both servers
#
# `lag` and `slow` take effect without a restart (ALTER SYSTEM on the replica and
# a configuration reload) and survive down/up, not reset.
#
# Servers (127.0.0.1 only, trust authentication, fsync off: demo servers, not
# for production). Roles: postgres (superuser), posts (writes, on the primary),
# feeds (reads, on the replica); both made by demo/schema.sql.
#
# Environment:
#   TIERCACHE_RUN_DIR                 <repo>/.run   data in <run dir>/demo-pg
#   TIERCACHE_DEMO_PG_PRIMARY_PORT    15442
#   TIERCACHE_DEMO_PG_REPLICA_PORT    15443
#   TIERCACHE_DEMO_COMMUNITIES        1000   seed: number of communities
#   TIERCACHE_DEMO_POSTS_MAX          600    seed: posts of the largest community
#   TIERCACHE_PG_BIN                  /usr/lib/postgresql/15/bin
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
run_dir="${TIERCACHE_RUN_DIR:-$repo/.run}"
primary_port="${TIERCACHE_DEMO_PG_PRIMARY_PORT:-15442}"
replica_port="${TIERCACHE_DEMO_PG_REPLICA_PORT:-15443}"
communities="${TIERCACHE_DEMO_COMMUNITIES:-1000}"
posts_max="${TIERCACHE_DEMO_POSTS_MAX:-600}"
pg_bin="${TIERCACHE_PG_BIN:-/usr/lib/postgresql/15/bin}"
demo_dir="$run_dir/demo-pg"

say() { echo "platform: $*"; }
fail() { echo "platform: $*" >&2; return 1; }

# ---- helpers (the same conventions as scripts/services.sh) -----------------

# pid_of, port_in_use, port_owner, require_free_port, wait_for, log_tail
# shellcheck source-path=SCRIPTDIR source=lib/process.sh
. "$here/lib/process.sh"

# PostgreSQL refuses to run as root: as root, its tools run as the `postgres`
# user; as anyone else, as that user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

is_uint() { [[ "${1:-}" =~ ^[0-9]+$ ]]; }

# ---- layout ----------------------------------------------------------------
#   demo-pg/primary, demo-pg/replica            data directories
#   demo-pg/primary.sock/, demo-pg/replica.sock/ unix socket directories
#   demo-pg/primary.log, demo-pg/replica.log    server logs
# Each data directory's postgresql.conf includes platform.conf (written by this
# script at every start: ports, sockets, the settings below) and
# platform-runtime.conf (the fallback for `lag`/`slow` if ALTER SYSTEM fails).

# The postgres user must reach the data: if it cannot traverse the run folder (a
# parent directory closed to others), keep the data under /var/tmp, linked here.
prepare_demo_dir() {
  if [ ! -e "$demo_dir" ]; then
    mkdir -p "$run_dir"
    if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$run_dir"; then
      local real
      real="/var/tmp/tiercache-demo-pg-$(echo "$run_dir" | md5sum | cut -c1-12)"
      rm -rf "$real" && mkdir -p "$real" && ln -sfn "$real" "$demo_dir"
    else
      mkdir -p "$demo_dir"
    fi
  fi
  resolve_demo_dir
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$demo_dir"
  return 0
}
resolve_demo_dir() { [ -L "$demo_dir" ] && demo_dir="$(readlink -f "$demo_dir")"; return 0; }

data_of() { echo "$demo_dir/$1"; }
port_of() { if [ "$1" = primary ]; then echo "$primary_port"; else echo "$replica_port"; fi; }
server_pid() { pid_of "$(data_of "$1")/postmaster.pid" "postgres"; }
answers() { "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$(port_of "$1")" -t 2; }

# q SERVER USER SQL [psql args...]: one query on database demo, unaligned,
# tuples only; a new session every time.
q() {
  local server=$1 user=$2 sql=$3; shift 3
  PGCONNECT_TIMEOUT=5 "$pg_bin/psql" -X -h 127.0.0.1 -p "$(port_of "$server")" -U "$user" -d demo \
    -v ON_ERROR_STOP=1 -qtAc "$sql" "$@"
}

write_platform_conf() {
  local server=$1 data
  data=$(data_of "$server")
  {
    echo "# demo platform $server (generated by scripts/platform.sh at every start; edits are lost)"
    echo "port = $(port_of "$server")"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$demo_dir/$server.sock'"
    echo "shared_preload_libraries = 'pg_stat_statements'"
    echo "pg_stat_statements.track = top"
    echo "wal_level = replica"
    echo "max_wal_senders = 4"
    echo "wal_keep_size = 256MB"
    echo "hot_standby_feedback = off"
    echo "fsync = off"
    echo "synchronous_commit = off"
    echo "full_page_writes = off"
    echo "max_connections = 300"
    echo "shared_buffers = 128MB"
    if [ "$server" = replica ]; then
      echo "hot_standby = on"
      echo "primary_conninfo = 'host=127.0.0.1 port=$primary_port user=postgres application_name=demo_replica'"
    fi
  } >"$data/platform.conf"
  cat >"$data/pg_hba.conf" <<'EOF'
# demo platform (generated by scripts/platform.sh): trust from this machine only
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
EOF
  if ! grep -q "^include = 'platform.conf'" "$data/postgresql.conf"; then
    printf "\n# demo platform (scripts/platform.sh)\ninclude = 'platform.conf'\ninclude_if_exists = 'platform-runtime.conf'\n" \
      >>"$data/postgresql.conf"
  fi
  # pg_basebackup -R put a primary_conninfo naming the primary's port at that
  # time into postgresql.auto.conf, which would win over platform.conf.
  [ "$server" = replica ] && sed -i '/^primary_conninfo[[:space:]]*=/d' "$data/postgresql.auto.conf"
  [ -f "$data/platform-runtime.conf" ] ||
    echo "# demo platform: settings of 'scripts/platform.sh lag/slow' when ALTER SYSTEM is refused" >"$data/platform-runtime.conf"
  mkdir -p "$demo_dir/$server.sock"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$data" "$demo_dir/$server.sock"
  return 0
}

start_server() {
  local server=$1 data log
  data=$(data_of "$server")
  log="$demo_dir/$server.log"
  write_platform_conf "$server"
  local deadline=$((SECONDS + 90)) port told=0
  port=$(port_of "$server")
  while true; do
    as_pg "$pg_bin/pg_ctl" -D "$data" -l "$log" -w -t 120 start >"$demo_dir/$server.pg_ctl.log" 2>&1 && return 0
    # The default ports lie in Linux's ephemeral range (32768-60999): another
    # program's outgoing connection may hold the port as its local end, also
    # for 60 s in TIME-WAIT after it closed. Not a listener (checked before),
    # so wait for it to go.
    tail -n 8 "$log" 2>/dev/null | grep -q 'could not bind.*Address already in use' || break
    ! port_in_use "$port" && ((SECONDS < deadline)) || break
    if ((told == 0)); then
      told=1
      say "$server: port $port is the local end of another program's connection ($(ss -Htan "sport = :$port" 2>/dev/null |
        awk '{print $1, $4, "->", $5}' | head -n 3 | paste -sd ';' -)); retrying for up to 90 s"
    fi
    sleep 2
  done
  fail "postgresql $server exited at start or did not start within 120 s"
  log_tail "$demo_dir/$server.pg_ctl.log" 5
  log_tail "$log"
  return 1
}

stop_server() {
  local server=$1 pid data
  pid=$(server_pid "$server") || return 0
  data=$(data_of "$server")
  kill -CONT "$pid" 2>/dev/null
  if as_pg "$pg_bin/pg_ctl" -D "$data" -m fast -w -t 20 stop >/dev/null 2>&1; then
    say "$server stopped"
  elif as_pg "$pg_bin/pg_ctl" -D "$data" -m immediate -w -t 20 stop >/dev/null 2>&1; then
    say "$server stopped (immediate: a fast shutdown took over 20 s)"
  else
    kill -KILL "$pid" 2>/dev/null
    say "$server killed (did not stop)"
  fi
}

# Running, but maybe started with another port than the one asked for now.
check_running() {
  local server=$1 pid=$2
  if wait_for 10 answers "$server"; then
    say "$server already running on 127.0.0.1:$(port_of "$server") (pid $pid)"
    return 0
  fi
  fail "postgresql $server (pid $pid) is running but not accepting connections on 127.0.0.1:$(port_of "$server") (another port? 'scripts/platform.sh down' first)"
  log_tail "$demo_dir/$server.log"
  return 1
}

# ---- primary ---------------------------------------------------------------

primary_up() {
  local data pid
  data=$(data_of primary)
  if pid=$(server_pid primary); then
    check_running primary "$pid" || return 1
  else
    require_free_port "$primary_port" "demo postgresql primary" TIERCACHE_DEMO_PG_PRIMARY_PORT || return 1
    if [ ! -f "$data/PG_VERSION" ]; then
      rm -rf "$data"
      if ! as_pg "$pg_bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-sync \
          >"$demo_dir/primary.initdb.log" 2>&1; then
        fail "initdb failed"; log_tail "$demo_dir/primary.initdb.log"; return 1
      fi
    fi
    start_server primary || return 1
    say "primary started on 127.0.0.1:$primary_port (pid $(server_pid primary))"
  fi
  local exists
  exists=$(PGCONNECT_TIMEOUT=5 "$pg_bin/psql" -X -h 127.0.0.1 -p "$primary_port" -U postgres -d postgres -qtAc \
    "SELECT 1 FROM pg_database WHERE datname = 'demo'" 2>&1) ||
    { fail "cannot query the primary: $exists"; return 1; }
  if [ "$exists" != 1 ]; then
    "$pg_bin/createdb" -h 127.0.0.1 -p "$primary_port" -U postgres demo || { fail "createdb demo failed"; return 1; }
  fi
  local out
  if ! out=$("$pg_bin/psql" -X -q -h 127.0.0.1 -p "$primary_port" -U postgres -d demo -v ON_ERROR_STOP=1 \
      -f "$repo/demo/schema.sql" 2>&1); then
    fail "applying demo/schema.sql failed:"; echo "$out" >&2; return 1
  fi
  if ! out=$("$pg_bin/psql" -X -q -h 127.0.0.1 -p "$primary_port" -U postgres -d demo -v ON_ERROR_STOP=1 \
      -v "communities=$communities" -v "posts_max=$posts_max" -f "$repo/demo/seed.sql" 2>&1); then
    fail "applying demo/seed.sql failed:"; echo "$out" >&2; return 1
  fi
  say "primary: database demo ready ($(q primary postgres 'SELECT count(*) FROM posts') posts)"
}

# ---- replica ---------------------------------------------------------------

replica_streaming() {
  [ "$(q replica postgres "SELECT pg_is_in_recovery()
      AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')
      AND to_regclass('public.posts') IS NOT NULL" 2>/dev/null)" = t ]
}

replica_up() {
  local data pid
  data=$(data_of replica)
  if pid=$(server_pid replica); then
    check_running replica "$pid" || return 1
  else
    require_free_port "$replica_port" "demo postgresql replica" TIERCACHE_DEMO_PG_REPLICA_PORT || return 1
    if [ ! -f "$data/PG_VERSION" ]; then
      rm -rf "$data"
      say "replica: pg_basebackup from the primary"
      if ! as_pg "$pg_bin/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres -D "$data" -R -X stream -c fast \
          >"$demo_dir/replica.basebackup.log" 2>&1; then
        fail "pg_basebackup failed"; log_tail "$demo_dir/replica.basebackup.log"; rm -rf "$data"; return 1
      fi
      rm -f "$data/platform-runtime.conf"  # the primary's, if any
    fi
    start_server replica || return 1
    say "replica started on 127.0.0.1:$replica_port (pid $(server_pid replica))"
  fi
  if ! wait_for 60 replica_streaming; then
    fail "the replica is not streaming from the primary within 60 s (pg_is_in_recovery, pg_stat_wal_receiver, table posts)"
    log_tail "$demo_dir/replica.log"
    return 1
  fi
}

# ---- settings on the replica (lag, slow) -----------------------------------

# set_replica_setting NAME VALUE: ALTER SYSTEM on the standby (it writes only the
# replica's postgresql.auto.conf); if refused, the same line in
# platform-runtime.conf. Then a reload, and a wait until a new session sees it.
set_replica_setting() {
  local name=$1 value=$2 data out
  local conf tmp
  data=$(data_of replica)
  conf="$data/platform-runtime.conf"
  server_pid replica >/dev/null || { fail "the replica is not running; scripts/platform.sh up"; return 1; }
  tmp=$(mktemp)
  [ -f "$conf" ] && grep -v "^$name[[:space:]]*=" "$conf" >"$tmp"
  if out=$(q replica postgres "ALTER SYSTEM SET $name = '$value'" 2>&1); then
    # postgresql.auto.conf has it; drop an older line of ours.
    cat "$tmp" >"$conf"
  else
    # PostgreSQL 15 refuses ALTER SYSTEM for a custom setting (demo.*) that no
    # file defines yet ("unrecognized configuration parameter").
    say "ALTER SYSTEM refused on the replica (${out#ERROR:  }); setting it in $conf"
    { cat "$tmp"; echo "$name = '$value'"; } >"$conf"
  fi
  rm -f "$tmp"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$conf"
  out=$(q replica postgres "SELECT pg_reload_conf()" 2>&1) || { fail "reload failed: $out"; return 1; }
}

# setting_is NAME EXPECTED: current_setting in a new session on the replica.
setting_is() { [ "$(q replica postgres "SELECT current_setting('$1', true)")" = "$2" ]; }

delay_is() { [ "$(q replica postgres "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'")" = "$1" ]; }

cmd_lag() {
  is_uint "${1:-}" || { fail "usage: $0 lag MS (0 = no delay)"; return 2; }
  local ms=$((10#$1))
  set_replica_setting recovery_min_apply_delay "$ms" || return 1
  if ! wait_for 10 delay_is "$ms"; then
    fail "the replica still shows recovery_min_apply_delay = $(q replica postgres 'SHOW recovery_min_apply_delay') after the reload"
    return 1
  fi
  say "replica recovery_min_apply_delay = $(q replica postgres 'SHOW recovery_min_apply_delay') (${ms} ms)"
}

cmd_slow() {
  is_uint "${1:-}" || { fail "usage: $0 slow MS (0 = none)"; return 2; }
  local ms=$((10#$1))
  set_replica_setting demo.read_delay_ms "$ms" || return 1
  if ! wait_for 10 setting_is demo.read_delay_ms "$ms"; then
    fail "a new session on the replica still shows demo.read_delay_ms = '$(q replica postgres "SELECT current_setting('demo.read_delay_ms', true)")'"
    return 1
  fi
  say "replica demo.read_delay_ms = $(q replica postgres "SELECT current_setting('demo.read_delay_ms', true)") (primary: '$(q primary postgres "SELECT current_setting('demo.read_delay_ms', true)")')"
}

# ---- lag and statistics ----------------------------------------------------

# The replica's replay lag in ms. Caught up (everything received is applied):
# 0. Otherwise the age of the first commit received but not applied yet, read
# from the replica's own WAL with pg_waldump (with recovery_min_apply_delay the
# startup process waits just before that commit record), so a single write after
# an idle period reads ~0 and grows to the delay. If pg_waldump cannot read it:
# the time since the last applied commit (the usual estimate).
replay_lag_ms() {
  local row behind replay since_last ts now_ms ts_ms
  row=$(q replica postgres "SELECT coalesce(pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn(), false),
      pg_last_wal_replay_lsn(),
      coalesce(greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint, 0)" -F ' ') ||
    { fail "cannot query the replica on 127.0.0.1:$replica_port"; return 1; }
  read -r behind replay since_last <<<"$row"
  if [ "$behind" != t ]; then echo 0; return 0; fi
  ts=$(TZ=UTC timeout 10 "$pg_bin/pg_waldump" -p "$(data_of replica)/pg_wal" -s "$replay" -r Transaction -n 1000 2>/dev/null |
    grep -m1 -oE 'COMMIT [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:.]+ UTC' | cut -d' ' -f2-)
  if [ -z "$ts" ]; then
    # Nothing committed is waiting (replay is just behind by a few records), or
    # the WAL was not readable.
    if [ -r "$(data_of replica)/pg_wal" ]; then echo 0; else echo "$since_last"; fi
    return 0
  fi
  now_ms=$(date +%s%3N)
  ts_ms=$(date -d "$ts" +%s%3N) || { echo "$since_last"; return 0; }
  echo $((now_ms > ts_ms ? now_ms - ts_ms : 0))
}

statements_of() {  # SERVER ROLE: calls by ROLE, not counting reads of pg_stat_statements
  q "$1" postgres "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
                   WHERE r.rolname = '$2' AND s.query NOT ILIKE '%pg_stat_statements%'"
}

cmd_stats() {
  local a b c
  a=$(statements_of replica feeds) && b=$(statements_of primary feeds) && c=$(statements_of primary posts) ||
    { fail "cannot read pg_stat_statements (is the platform up?)"; return 1; }
  echo "feeds_queries_replica $a"
  echo "feeds_queries_primary $b"
  echo "posts_queries_primary $c"
}

cmd_stats_reset() {
  q primary postgres "SELECT pg_stat_statements_reset()" >/dev/null &&
    q replica postgres "SELECT pg_stat_statements_reset()" >/dev/null ||
    { fail "pg_stat_statements_reset() failed (is the platform up?)"; return 1; }
  say "pg_stat_statements reset on primary and replica"
}

# ---- status ----------------------------------------------------------------

status_line() {
  local server=$1 pid
  if ! pid=$(server_pid "$server"); then
    printf '%-8s 127.0.0.1:%s  down\n' "$server" "$(port_of "$server")"
    return 1
  fi
  if ! answers "$server"; then
    printf '%-8s 127.0.0.1:%s  not accepting connections (pid %s)\n' "$server" "$(port_of "$server")" "$pid"
    return 1
  fi
  printf '%-8s 127.0.0.1:%s  up    pid %s' "$server" "$(port_of "$server")" "$pid"
}

cmd_status() {
  local rows lag
  if status_line primary; then
    rows=$(q primary postgres "SELECT coalesce(string_agg(application_name || ' ' || state || ' replay_lsn ' || coalesce(replay_lsn::text, '-'), ', '), 'none')
                               FROM pg_stat_replication" 2>/dev/null)
    echo "  posts $(q primary postgres 'SELECT count(*) FROM posts' 2>/dev/null || echo '?')  wal $(q primary postgres 'SELECT pg_current_wal_lsn()' 2>/dev/null)  replicas: ${rows:-?}"
  fi
  if status_line replica; then
    lag=$(replay_lag_ms 2>/dev/null || echo '?')
    echo "  $(q replica postgres "SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' ELSE 'NOT IN RECOVERY' END
           || ' receiver ' || coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')
           || '  replay_lsn ' || coalesce(pg_last_wal_replay_lsn()::text, '-')" 2>/dev/null)  replay lag ${lag} ms  apply delay $(q replica postgres 'SHOW recovery_min_apply_delay' 2>/dev/null)  demo.read_delay_ms '$(q replica postgres "SELECT current_setting('demo.read_delay_ms', true)" 2>/dev/null)'"
  fi
  return 0
}

print_dsns() {
  echo "primary host=127.0.0.1 port=$primary_port dbname=demo user=posts"
  echo "replica host=127.0.0.1 port=$replica_port dbname=demo user=feeds"
}

# ---- main ------------------------------------------------------------------

resolve_demo_dir
case "${1:-}" in
  up)
    [ -x "$pg_bin/postgres" ] || { fail "PostgreSQL 15 is missing ($pg_bin/postgres); run make setup"; exit 1; }
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
      fail "the 'postgres' user is missing; run make setup (installs postgresql-15)"; exit 1
    fi
    [ "$primary_port" != "$replica_port" ] ||
      { fail "TIERCACHE_DEMO_PG_PRIMARY_PORT and TIERCACHE_DEMO_PG_REPLICA_PORT are both $primary_port"; exit 1; }
    prepare_demo_dir
    # Every port of a server to start is free, before anything starts.
    rc=0
    server_pid primary >/dev/null ||
      require_free_port "$primary_port" "demo postgresql primary" TIERCACHE_DEMO_PG_PRIMARY_PORT || rc=1
    server_pid replica >/dev/null ||
      require_free_port "$replica_port" "demo postgresql replica" TIERCACHE_DEMO_PG_REPLICA_PORT || rc=1
    ((rc == 0)) || exit 1
    primary_up || exit 1
    replica_up || exit 1
    print_dsns
    ;;
  down)
    stop_server replica
    stop_server primary
    ;;
  status) cmd_status ;;
  reset)
    stop_server replica
    stop_server primary
    if [ -d "$demo_dir" ]; then
      rm -rf "$demo_dir/primary" "$demo_dir/replica" "$demo_dir"/*.sock "$demo_dir"/*.log
      say "deleted the data directories in $demo_dir"
    fi
    ;;
  lag) cmd_lag "${2:-}" || exit $? ;;
  slow) cmd_slow "${2:-}" || exit $? ;;
  replay-lag) replay_lag_ms || exit 1 ;;
  stats) cmd_stats || exit 1 ;;
  stats-reset) cmd_stats_reset || exit 1 ;;
  *)
    echo "usage: $0 up|down|status|reset|lag MS|slow MS|replay-lag|stats|stats-reset" >&2
    exit 2
    ;;
esac
