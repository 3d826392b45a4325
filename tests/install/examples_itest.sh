#!/usr/bin/env bash
# Integration test of the install tree (cmake/install.cmake) and examples/:
#   cmake --install BUILD into a temporary prefix, then the prefix moved (the
#   CMake and pkg-config files must find it where it is); no path of the
#   source or build tree left in them; examples/find_package configured, built
#   and run against the local Redis Cluster and Kafka; the L1 + Redis program
#   links neither librdkafka nor libpq; a component that does not exist and a
#   version that is not compatible are refused by find_package with a clear
#   message; examples/pkg_config built with pkg-config and run.
# Usage: examples_itest.sh BUILD_DIR
# Environment: TIERCACHE_REDIS_PORT_BASE (7000), TIERCACHE_KAFKA_PORT (9092)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="$(cd "${1:?usage: examples_itest.sh BUILD_DIR}" && pwd)"
redis="127.0.0.1:${TIERCACHE_REDIS_PORT_BASE:-7000}"
kafka="127.0.0.1:${TIERCACHE_KAFKA_PORT:-9092}"
work=$(mktemp -d /tmp/tiercache-install-itest.XXXXXX)
trap 'rm -rf "$work"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

cmake --install "$build" --prefix "$work/staged" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "cmake --install"; }
mv "$work/staged" "$work/prefix"
prefix="$work/prefix"
ok "installed, then moved to $prefix"

for f in include/tiercache/cache.h include/tiercache/redis/redis_client.h lib/libtiercache_core.a \
         lib/cmake/tiercache/tiercacheConfig.cmake lib/cmake/tiercache/tiercacheConfigVersion.cmake \
         lib/pkgconfig/tiercache.pc lib/pkgconfig/tiercache-kafka.pc lib/pkgconfig/tiercache-outbox.pc \
         bin/tiercache bin/tiercache-outbox-relay; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
[ -e "$prefix/include/tiercache" ] && ! find "$prefix/include" -name '*.cc' | grep -q . ||
  fail "sources installed with the headers"
if grep -rl -e "$repo" -e "$build" "$prefix/lib/cmake" "$prefix/lib/pkgconfig"; then
  fail "the files above name the source or build tree"
fi
ok "headers, libraries, programs, package files; no build paths in them"

# --- find_package ---------------------------------------------------------
cmake -S "$repo/examples/find_package" -B "$work/fp" "${generator[@]}" -DCMAKE_PREFIX_PATH="$prefix" \
  >"$work/fp.log" 2>&1 || { cat "$work/fp.log"; fail "examples/find_package: configure"; }
cmake --build "$work/fp" >>"$work/fp.log" 2>&1 || { cat "$work/fp.log"; fail "examples/find_package: build"; }
ok "examples/find_package configured and built"

out=$("$work/fp/tiered_get" "$redis" 2>&1) || { echo "$out"; fail "tiered_get against $redis"; }
echo "$out" | grep -q 'loads: 1 (want 1)' || { echo "$out"; fail "tiered_get: unexpected output"; }
ok "tiered_get ran against the cluster: $(echo "$out" | tr '\n' ' ')"
if ldd "$work/fp/tiered_get" | grep -E 'rdkafka|libpq'; then
  fail "the L1 + Redis program links librdkafka or libpq"
fi
ok "tiered_get links neither librdkafka nor libpq"

out=$("$work/fp/invalidation_event" "$kafka" 2>&1) || { echo "$out"; fail "invalidation_event against $kafka"; }
echo "$out" | grep -q '^published ' || { echo "$out"; fail "invalidation_event: unexpected output"; }
ok "invalidation_event published to Kafka: $(echo "$out" | grep '^published' | sed 's/.* at /at /')"

# A component this installation does not have, and an incompatible version.
probe() {  # name, find_package arguments...
  local name=$1; shift
  mkdir -p "$work/$name"
  printf 'cmake_minimum_required(VERSION 3.25)\nproject(p LANGUAGES CXX)\nfind_package(%s)\n' "$*" \
    >"$work/$name/CMakeLists.txt"
  cmake -S "$work/$name" -B "$work/$name/b" -DCMAKE_PREFIX_PATH="$prefix" >"$work/$name.log" 2>&1
}
if probe nosuch tiercache REQUIRED COMPONENTS nosuch; then fail "COMPONENTS nosuch was accepted"; fi
grep -q "no component 'nosuch'" "$work/nosuch.log" || { cat "$work/nosuch.log"; fail "no clear message for nosuch"; }
if probe version tiercache 9.0 REQUIRED; then fail "version 9.0 was accepted"; fi
grep -q 'version' "$work/version.log" || { cat "$work/version.log"; fail "no clear message for 9.0"; }
probe outbox tiercache REQUIRED COMPONENTS outbox || { cat "$work/outbox.log"; fail "COMPONENTS outbox"; }
grep -q 'tiercache::kafka' "$prefix/lib/cmake/tiercache/tiercache-outbox-targets.cmake" ||
  fail "the outbox targets do not name tiercache::kafka (the order check below would prove nothing)"
order=(outbox kafka); [ -e "$prefix/lib/pkgconfig/tiercache-prometheus.pc" ] && order=(prometheus outbox kafka)
probe order tiercache REQUIRED COMPONENTS "${order[@]}" ||
  { cat "$work/order.log"; fail "COMPONENTS in an order other than their dependencies'"; }
ok "find_package refuses COMPONENTS nosuch and version 9.0; accepts outbox alone and parts in any order"

# --- pkg-config -------------------------------------------------------------
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
libs=$(pkg-config --libs tiercache) || fail "pkg-config --libs tiercache"
case "$libs" in *rdkafka*|*-lpq*) fail "pkg-config tiercache names Kafka or PostgreSQL: $libs" ;; esac
pkg-config --libs tiercache-outbox | grep -q -- '-lrdkafka' || fail "tiercache-outbox does not pull rdkafka"
make -s -C "$repo/examples/pkg_config" OUT="$work/pc" >"$work/pc.log" 2>&1 ||
  { cat "$work/pc.log"; fail "examples/pkg_config: make"; }
out=$("$work/pc/tiered_get" "$redis" 2>&1) || { echo "$out"; fail "pkg-config tiered_get against $redis"; }
echo "$out" | grep -q 'loads: 1 (want 1)' || { echo "$out"; fail "pkg-config tiered_get: unexpected output"; }
ok "examples/pkg_config built with pkg-config and ran"
echo "PASS"
