#!/usr/bin/env bash
# The reference platform against the real servers (Redis Cluster, Kafka,
# PostgreSQL primary + replica): posts-service and two feeds-service pods with
# tiercache, driven by demo-load. Checks what the demo's drills claim, in
# small:
#   1. with the replica lagging 3 s behind, writes and reads go on: no error,
#      no stale read past the 1 s window, no lost invalidation, every write
#      visible on both pods within 1 s;
#   2. a stampede of 200 readers on a just-invalidated page: 1 database query;
#   3. the same as 1 with the cache's fences switched off (and no routing to
#      the primary): stale reads appear — so check 1 can fail.
# Needs: `scripts/services.sh up` (make test does it); starts the demo's
# PostgreSQL pair itself (scripts/platform.sh, fresh data) and stops it.
# Environment: TIERCACHE_DEMO_BIN (the build's demo/ folder), TIERCACHE_ITEST_PORT_BASE (28080).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
bin="${TIERCACHE_DEMO_BIN:-$repo/build/demo}"
base="${TIERCACHE_ITEST_PORT_BASE:-28080}"
work="$(mktemp -d /tmp/demo-itest.XXXXXX)"
redis_base="${TIERCACHE_REDIS_PORT_BASE:-7000}"
brokers="127.0.0.1:${TIERCACHE_KAFKA_PORT:-9092}"
redis="127.0.0.1:$redis_base,127.0.0.1:$((redis_base + 1)),127.0.0.1:$((redis_base + 2))"
pp="${TIERCACHE_DEMO_PG_PRIMARY_PORT:-15442}"
rp="${TIERCACHE_DEMO_PG_REPLICA_PORT:-15443}"
python=/usr/bin/python3; [ -x "$python" ] || python=python3
pids=()
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  scripts/platform.sh lag 0 >/dev/null 2>&1
  scripts/platform.sh down >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

for b in posts-service feeds-service demo-load; do
  [ -x "$bin/$b" ] || { echo "FAIL: $bin/$b is missing (build the demo-programs target)" >&2; exit 1; }
done
scripts/services.sh status >/dev/null 2>&1 || true
redis-cli -p "$redis_base" ping >/dev/null 2>&1 || { echo "FAIL: Redis is not running: scripts/services.sh up" >&2; exit 1; }

echo "== fresh platform"
scripts/platform.sh reset >/dev/null 2>&1
scripts/platform.sh up >"$work/platform.log" 2>&1 || { cat "$work/platform.log" >&2; echo "FAIL: platform up" >&2; exit 1; }
for p in $(seq "$redis_base" $((redis_base + 5))); do
  [ "$(redis-cli -p "$p" role 2>/dev/null | head -n1)" = master ] && redis-cli -p "$p" flushall >/dev/null
done
"$bin/demo-load" recreate-topic --brokers "$brokers" --topic community.posts.v1 || { echo "FAIL: topic" >&2; exit 1; }

start() {  # name port args...
  local name=$1 port=$2; shift 2
  "$@" --pod "$name" --port "$port" >>"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 150); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0; sleep 0.2; done
  tail -n 20 "$work/$name.log" >&2
  echo "FAIL: $name did not start" >&2
  exit 1
}
feeds() {  # extra flags...
  start feeds-a $((base + 1)) "$bin/feeds-service" --redis "$redis" --brokers "$brokers" --group-id "itest-$$" \
    --pg-replica "host=127.0.0.1 port=$rp dbname=demo user=feeds" --pg-primary "host=127.0.0.1 port=$pp dbname=demo user=feeds" "$@"
  start feeds-b $((base + 2)) "$bin/feeds-service" --redis "$redis" --brokers "$brokers" --group-id "itest-$$" \
    --pg-replica "host=127.0.0.1 port=$rp dbname=demo user=feeds" --pg-primary "host=127.0.0.1 port=$pp dbname=demo user=feeds" "$@"
  for port in $((base + 1)) $((base + 2)); do
    for _ in $(seq 150); do curl -s "http://127.0.0.1:$port/metrics" | grep -q '^tiercache_l1_fenced 0' && break; sleep 0.2; done
  done
}
stop_feeds() {
  local keep=()
  for p in "${pids[@]}"; do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q feeds-service; then kill -TERM "$p"; wait "$p" 2>/dev/null; else keep+=("$p"); fi
  done
  pids=("${keep[@]}")
}
start posts "$base" "$bin/posts-service" --pg "host=127.0.0.1 port=$pp dbname=demo user=posts" --brokers "$brokers" --redis "$redis"
feeds

load() {  # json [more flags]
  local json=$1; shift
  "$bin/demo-load" run --feeds "http://127.0.0.1:$((base + 1)),http://127.0.0.1:$((base + 2))" \
    --posts "http://127.0.0.1:$base" --rate 300 --writes 5 --duration 10 --communities 20 --connections 8 \
    --pg-replica-admin "host=127.0.0.1 port=$rp dbname=demo user=postgres" \
    --pg-primary-admin "host=127.0.0.1 port=$pp dbname=demo user=postgres" --json "$json" "$@" 2>"$json.log"
}
field() { "$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[int(k)] if isinstance(v,list) else v[k]
print(v)' "$1" "$2"; }

echo "== 1. writes and reads with the replica 3 s behind"
"$bin/demo-load" warm --feeds "http://127.0.0.1:$((base + 1)),http://127.0.0.1:$((base + 2))" --communities 20 --pages 3 2>/dev/null
scripts/platform.sh lag 3000 >/dev/null
load "$work/protected.json"
cat "$work/protected.json"
[ "$(field "$work/protected.json" phases.0.errors)" = 0 ] || fail "errors with the cache"
[ "$(field "$work/protected.json" stale_reads)" = 0 ] || { fail "stale reads with the fences on"; grep STALE "$work/protected.json.log" | head >&2; }
[ "$(field "$work/protected.json" writes.lost)" = 0 ] || fail "lost invalidations"
[ "$(field "$work/protected.json" writes.acked)" -ge 40 ] || fail "too few writes acknowledged"
"$python" -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 1000 else 1)' "$(field "$work/protected.json" writes.vis_lag_max_ms)" ||
  fail "a write took 1 s or more to be visible on both pods"

echo "== 2. stampede: 200 readers of a page just invalidated"
scripts/platform.sh lag 0 >/dev/null
sleep 1
curl -sf -XPOST "http://127.0.0.1:$base/communities/1/posts" -d '{"author":"t","title":"stampede","body":"b"}' >/dev/null ||
  fail "write for the stampede"
sleep 1
"$bin/demo-load" stampede --feeds "http://127.0.0.1:$((base + 1)),http://127.0.0.1:$((base + 2))" --community 1 --readers 200 \
  --pg-replica-admin "host=127.0.0.1 port=$rp dbname=demo user=postgres" \
  --pg-primary-admin "host=127.0.0.1 port=$pp dbname=demo user=postgres" --json "$work/stampede.json"
cat "$work/stampede.json"
[ "$(field "$work/stampede.json" page_queries)" = 1 ] || fail "the stampede made $(field "$work/stampede.json" page_queries) page queries, not 1"
[ "$(field "$work/stampede.json" errors)" = 0 ] || fail "stampede errors"

echo "== 3. the same as 1 without the fences (and no routing to the primary): stale reads must appear"
stop_feeds
feeds --fencing off --primary-window-ms 0
scripts/platform.sh lag 3000 >/dev/null
load "$work/unprotected.json" --lost-after-ms 5000
cat "$work/unprotected.json"
[ "$(field "$work/unprotected.json" stale_reads)" -gt 0 ] ||
  fail "no stale read without the fences: the check of part 1 could not have failed"

if ((failures)); then echo "demo_itest: $failures check(s) failed" >&2; exit 1; fi
echo "demo_itest: all checks passed"
