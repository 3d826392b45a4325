#!/usr/bin/env bash
# Runs bench/<name>.cc's program from the build dir; starts the local servers
# first when the benchmark talks to them. Usage: scripts/bench.sh <name>
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
name="${1:?usage: bench.sh <name>}"
# bench-l1-sim: bench_l1's reads under callgrind (see bench_l1_sim.sh).
[ "$name" = l1-sim ] && exec "$here/bench_l1_sim.sh" "$repo/${BUILD_DIR:-build}/bench/bench_l1"
bin="$repo/${BUILD_DIR:-build}/bench/bench_$name"
[ -x "$bin" ] || { echo "bench: no benchmark program bench/$name.cc (looked for $bin)" >&2; exit 2; }
case "$name" in
  l1) ;;                                   # in-process only
  *) "$here/services.sh" up >&2 ;;         # talks to Redis / Kafka / PostgreSQL
esac
exec "$bin"
