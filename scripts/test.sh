#!/usr/bin/env bash
# The project's test command (`make test`, called by .ci/run):
#   1. install what is missing (scripts/setup.sh)
#   2. build with -Werror, plus ASan+UBSan and TSan builds
#   3. start the local servers
#   4. run every test (unit + integration); re-run the `concurrency` tests
#      under ASan+UBSan and TSan
#   5. stop the servers, also when tests fail (TIERCACHE_KEEP_SERVICES=1 keeps them)
# Exits non-zero if any step or test fails.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
jobs="$(nproc)"

step() { echo; echo "==== $* ($(date -u +%H:%M:%S))"; }

step "setup"
scripts/setup.sh || exit 1

configure_and_build() {  # dir, extra cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTIERCACHE_WERROR=ON "$@" >/dev/null &&
    cmake --build "$dir" -j "$jobs"
}

step "build (-Werror)"
configure_and_build build || { echo "test: build failed" >&2; exit 1; }
# The sanitizer builds run the concurrency tests only; the CLI, which has
# none, is left out of them.
lean=(-DTIERCACHE_BUILD_BENCH=OFF -DTIERCACHE_BUILD_DEMO=OFF -DTIERCACHE_WITH_CLI=OFF)
step "build ASan+UBSan"
configure_and_build build-asan -DTIERCACHE_SANITIZE=address "${lean[@]}" ||
  { echo "test: ASan build failed" >&2; exit 1; }
step "build TSan"
configure_and_build build-tsan -DTIERCACHE_SANITIZE=thread "${lean[@]}" ||
  { echo "test: TSan build failed" >&2; exit 1; }

stop_services() {
  if [ "${TIERCACHE_KEEP_SERVICES:-0}" = 1 ]; then
    echo "test: leaving the servers running (TIERCACHE_KEEP_SERVICES=1)"
  else
    step "services down"
    scripts/services.sh down
  fi
}
trap stop_services EXIT

step "services up"
scripts/services.sh up || exit 1

rc=0
step "tests: unit"
ctest --test-dir build -L unit --output-on-failure -j "$jobs" || rc=1
# One at a time: they share the servers, some kill or stop nodes, and some
# measure timing, which parallel CPU load would disturb.
step "tests: integration"
ctest --test-dir build -L integration --output-on-failure || rc=1
step "tests: concurrency under ASan+UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -L concurrency --no-tests=error --output-on-failure -j "$jobs" || rc=1
step "tests: concurrency under TSan"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build-tsan -L concurrency --no-tests=error --output-on-failure -j "$jobs" || rc=1

step "done"
if ((rc == 0)); then echo "test: all tests passed"; else echo "test: FAILED" >&2; fi
exit $rc
