#!/usr/bin/env bash
# Integration test of scripts/platform.sh (the demo's PostgreSQL primary and
# streaming replica), on its own ports and run folder so that it never touches a
# platform already running with the defaults:
#   up twice (the second changes nothing), a write on the primary seen on the
#   replica, `lag` (a write shows up only after the delay; replay-lag grows
#   meanwhile), `slow` (replica reads sleep, the primary's do not), `stats`,
#   a port already taken, down and up again (the replica reconnects), reset.
# Exits non-zero at the first failed check; always stops the servers and deletes
# what it made.
#
# Environment: TIERCACHE_ITEST_DEMO_PG_PRIMARY_PORT (15452),
#              TIERCACHE_ITEST_DEMO_PG_REPLICA_PORT (15453)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
platform="$repo/scripts/platform.sh"
pg_bin="${TIERCACHE_PG_BIN:-/usr/lib/postgresql/15/bin}"

primary=${TIERCACHE_ITEST_DEMO_PG_PRIMARY_PORT:-15452}
replica=${TIERCACHE_ITEST_DEMO_PG_REPLICA_PORT:-15453}
work=$(mktemp -d /tmp/tiercache-platform-itest.XXXXXX)
chmod 755 "$work"  # the postgres user keeps its data here
export TIERCACHE_RUN_DIR="$work/run"
export TIERCACHE_DEMO_PG_PRIMARY_PORT=$primary
export TIERCACHE_DEMO_PG_REPLICA_PORT=$replica
export TIERCACHE_DEMO_COMMUNITIES=40
export TIERCACHE_DEMO_POSTS_MAX=100

cleanup() {
  "$platform" reset >/dev/null 2>&1
  # The data may live under /var/tmp, linked from the run folder.
  local real
  real=$(readlink -f "$TIERCACHE_RUN_DIR/demo-pg" 2>/dev/null)
  case "$real" in /var/tmp/tiercache-demo-pg-*) rm -rf "$real" ;; esac
  rm -rf "$work"
}
trap cleanup EXIT

checks=0
ok() { checks=$((checks + 1)); echo "ok   $*"; }
die() { echo "FAIL $*" >&2; exit 1; }
now_ms() { date +%s%3N; }

# sql PORT USER SQL: one value.
sql() { PGCONNECT_TIMEOUT=5 "$pg_bin/psql" -X -h 127.0.0.1 -p "$1" -U "$2" -d demo -v ON_ERROR_STOP=1 -qtAc "$3"; }
insert_post() {  # TITLE: as posts on the primary
  sql "$primary" posts "INSERT INTO posts (community_id, author, title, body, version)
                        VALUES (1, 'itest', '$1', 'body', 1)" >/dev/null || die "insert of '$1' as posts on the primary"
}
on_replica() { [ "$(sql "$replica" feeds "SELECT count(*) FROM posts WHERE title = '$1'" 2>/dev/null)" = 1 ]; }
# wait_visible TITLE SECONDS: prints the ms it took.
wait_visible() {
  local start deadline
  start=$(now_ms); deadline=$((start + $2 * 1000))
  until on_replica "$1"; do
    (($(now_ms) < deadline)) || return 1
    sleep 0.05
  done
  echo $(($(now_ms) - start))
}
stat_of() { "$platform" stats | awk -v k="$1" '$1 == k { print $2 }'; }
pids() { echo "$(cat "$TIERCACHE_RUN_DIR/demo-pg/primary/postmaster.pid" 2>/dev/null | head -n1) $(cat "$TIERCACHE_RUN_DIR/demo-pg/replica/postmaster.pid" 2>/dev/null | head -n1)"; }

# ---- up, twice -------------------------------------------------------------
out=$("$platform" up 2>&1) || { echo "$out" >&2; die "up"; }
grep -qx "primary host=127.0.0.1 port=$primary dbname=demo user=posts" <<<"$out" || { echo "$out" >&2; die "up prints the primary's DSN"; }
grep -qx "replica host=127.0.0.1 port=$replica dbname=demo user=feeds" <<<"$out" || { echo "$out" >&2; die "up prints the replica's DSN"; }
ok "up: primary :$primary and replica :$replica"
[ "$(sql "$replica" postgres 'SELECT pg_is_in_recovery()')" = t ] || die "the replica is in recovery"
[ "$(sql "$primary" postgres 'SELECT pg_is_in_recovery()')" = f ] || die "the primary is not in recovery"
seeded=$(sql "$primary" postgres 'SELECT count(*) FROM posts')
((seeded > 40 * 30 - 1)) || die "seed: $seeded posts"
ok "seeded $seeded posts; replica in recovery"
before=$(pids)
out=$("$platform" up 2>&1) || { echo "$out" >&2; die "second up"; }
grep -q 'primary already running' <<<"$out" && grep -q 'replica already running' <<<"$out" ||
  { echo "$out" >&2; die "second up says both are already running"; }
[ "$(pids)" = "$before" ] || die "second up restarted a server ($before -> $(pids))"
[ "$(sql "$primary" postgres 'SELECT count(*) FROM posts')" = "$seeded" ] || die "second up changed the seed"
ok "second up is a no-op (same pids, same rows)"

# ---- replication -----------------------------------------------------------
"$platform" stats-reset >/dev/null || die "stats-reset"
insert_post itest-1
ms=$(wait_visible itest-1 10) || die "a post written on the primary is not on the replica within 10 s"
ok "a write on the primary is on the replica after ${ms} ms"

# ---- lag -------------------------------------------------------------------
out=$("$platform" lag 2000) || die "lag 2000"
grep -q 'recovery_min_apply_delay = 2s' <<<"$out" || die "lag 2000 prints the setting (got: $out)"
[ "$(sql "$replica" postgres 'SHOW recovery_min_apply_delay')" = 2s ] || die "recovery_min_apply_delay is 2s in a new session"
insert_post itest-2
start=$(now_ms); max_lag=0; lags=()
until on_replica itest-2; do
  l=$("$platform" replay-lag) || die "replay-lag"
  [[ "$l" =~ ^[0-9]+$ ]] || die "replay-lag prints an integer (got '$l')"
  lags+=("$l"); ((l > max_lag)) && max_lag=$l
  (($(now_ms) - start < 10000)) || die "with lag 2000 the post is not on the replica after 10 s"
  sleep 0.2
done
seen=$(($(now_ms) - start))
((seen >= 1700)) || die "with lag 2000 the post was on the replica after only ${seen} ms"
((max_lag >= 1000 && max_lag <= 3500)) || die "replay-lag while waiting peaked at ${max_lag} ms (want ~2000): ${lags[*]}"
grows=0
for ((i = 1; i < ${#lags[@]}; i++)); do ((lags[i] > lags[i - 1])) && grows=$((grows + 1)); done
((grows >= 3)) || die "replay-lag did not grow while waiting: ${lags[*]}"
ok "lag 2000: the post appeared after ${seen} ms; replay-lag grew to ${max_lag} ms (${lags[*]})"
wait_for_zero() { local i; for i in $(seq 1 50); do [ "$("$platform" replay-lag)" = 0 ] && return 0; sleep 0.1; done; return 1; }
wait_for_zero || die "replay-lag is not 0 once caught up"
"$platform" lag 0 >/dev/null || die "lag 0"
insert_post itest-3
ms=$(wait_visible itest-3 3) || die "after lag 0 a write is not on the replica within 3 s"
((ms < 1500)) || die "after lag 0 a write took ${ms} ms to reach the replica"
ok "lag 0: a write is on the replica after ${ms} ms; replay-lag 0 once caught up"

# ---- slow ------------------------------------------------------------------
timed() {  # PORT USER SQL: the statement's ms (psql \timing: not the connection)
  local out
  out=$(PGCONNECT_TIMEOUT=5 "$pg_bin/psql" -X -h 127.0.0.1 -p "$1" -U "$2" -d demo -v ON_ERROR_STOP=1 -qtA \
    -c '\timing on' -c "$3") || die "$3 on :$1 as $2"
  sed -nE 's/^Time: ([0-9]+)(\.[0-9]+)? ms.*/\1/p' <<<"$out" | tail -n1 | grep . || die "no timing for $3"
}
"$platform" slow 300 >/dev/null || die "slow 300"
[ "$(sql "$replica" feeds "SELECT current_setting('demo.read_delay_ms', true)")" = 300 ] || die "demo.read_delay_ms is 300 on the replica"
[ -z "$(sql "$primary" feeds "SELECT current_setting('demo.read_delay_ms', true)")" ] || die "demo.read_delay_ms is unset on the primary"
r=$(timed "$replica" feeds 'SELECT demo_read_delay()')
p=$(timed "$primary" feeds 'SELECT demo_read_delay()')
((r >= 290 && r < 1500)) || die "slow 300: demo_read_delay() on the replica took ${r} ms"
((p < 100)) || die "slow 300: demo_read_delay() on the primary took ${p} ms"
"$platform" slow 0 >/dev/null || die "slow 0"
r0=$(timed "$replica" feeds 'SELECT demo_read_delay()')
((r0 < 100)) || die "slow 0: demo_read_delay() on the replica took ${r0} ms"
ok "slow 300: replica read ${r} ms, primary ${p} ms; slow 0: replica ${r0} ms"

# ---- stats -----------------------------------------------------------------
posts_q=$(stat_of posts_queries_primary)
((posts_q >= 3)) || die "posts_queries_primary is $posts_q after 3 inserts"
f0=$(stat_of feeds_queries_replica); fp0=$(stat_of feeds_queries_primary)
for _ in 1 2 3; do sql "$replica" feeds 'SELECT * FROM posts LIMIT 1' >/dev/null || die "feeds read on the replica"; done
f1=$(stat_of feeds_queries_replica); fp1=$(stat_of feeds_queries_primary)
((f1 == f0 + 3)) || die "feeds_queries_replica went $f0 -> $f1 after 3 reads"
((fp1 == fp0)) || die "feeds_queries_primary went $fp0 -> $fp1 after reads on the replica only"
"$platform" stats-reset >/dev/null || die "stats-reset"
[ "$(stat_of feeds_queries_replica)" = 0 ] && [ "$(stat_of posts_queries_primary)" = 0 ] || die "stats-reset zeroes the counts"
ok "stats: feeds_queries_replica $f0 -> $f1, feeds_queries_primary $fp1, posts_queries_primary $posts_q; stats-reset zeroes them"

# ---- a port already taken --------------------------------------------------
out=$(TIERCACHE_RUN_DIR="$work/other" TIERCACHE_DEMO_PG_REPLICA_PORT=$((replica + 100)) "$platform" up 2>&1)
rc=$?
((rc == 1)) || die "up on a taken port exits 1 (got $rc)"
grep -q "port $primary .*already in use by postgres (pid [0-9]*).*TIERCACHE_DEMO_PG_PRIMARY_PORT" <<<"$out" ||
  { echo "$out" >&2; die "the error names the port, its owner and the variable"; }
ss -Hltn "sport = :$((replica + 100))" | grep -q . && die "nothing starts when a port is taken"
ok "a taken port: exit 1, '$(head -n1 <<<"$out")'"

# ---- down, up again --------------------------------------------------------
"$platform" down >/dev/null || die "down"
st=$("$platform" status)
grep -q "^primary .* down" <<<"$st" && grep -q "^replica .* down" <<<"$st" || { echo "$st" >&2; die "status after down"; }
ok "down: both stopped"
"$platform" up >/dev/null 2>&1 || die "up after down"
insert_post itest-4
ms=$(wait_visible itest-4 10) || die "after down/up the replica does not follow the primary"
on_replica itest-1 || die "data written before down is gone"
st=$("$platform" status)
grep -q "demo_replica streaming" <<<"$st" || { echo "$st" >&2; die "status shows the replica streaming"; }
ok "up again: existing data kept, replica reconnected (write seen after ${ms} ms)"

# ---- reset -----------------------------------------------------------------
"$platform" reset >/dev/null || die "reset"
[ ! -e "$TIERCACHE_RUN_DIR/demo-pg/primary" ] && [ ! -e "$TIERCACHE_RUN_DIR/demo-pg/replica" ] || die "reset deletes both data directories"
ss -Hltn "sport = :$primary" | grep -q . && die "reset stops the primary"
ss -Hltn "sport = :$replica" | grep -q . && die "reset stops the replica"
ok "reset: stopped and deleted"

echo "platform_itest: all $checks checks passed"
