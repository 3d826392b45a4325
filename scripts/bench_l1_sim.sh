#!/usr/bin/env bash
# `make bench-l1-sim`: what one L1 hit costs in instructions and simulated
# cache misses, for tiercache's L1 and the mutex LRU of bench/l1.cc, on the
# 1,000- and 10,000-key sets (one thread). Unlike wall-clock rates these do
# not depend on the machine's other load. Runs bench_l1 once per case under
# callgrind (valgrind, installed from Debian on first use), collecting only
# inside SimulatedReads() (see bench/l1.cc). "l1" is bench-l1's cache (a
# quarter full: its shards keep no frequency sketch yet), "l1sketching" the
# same keys in a cache two thirds full (sketch updates on every drained hit).
# Instruction counts repeat exactly; miss counts move a little with where
# the heap lands (address randomization). The simulated caches are this
# machine's per-core ones: 32 KiB L1 data, 1 MiB L2 as the last level, so
# "l2 misses" are reads that go to the shared L3 or memory, the part other
# tenants of the machine make slow. Usage: scripts/bench_l1_sim.sh <bench_l1>
set -euo pipefail
bin="${1:?usage: bench_l1_sim.sh <path to bench_l1>}"
[ -x "$bin" ] || { echo "bench-l1-sim: no $bin (build first)" >&2; exit 2; }
if ! command -v valgrind >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "bench-l1-sim: needs valgrind: apt-get install valgrind" >&2; exit 2; }
  log=$(mktemp)
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends valgrind; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; echo "bench-l1-sim: apt-get install valgrind failed" >&2; exit 2
  fi
  rm -f "$log"
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# Per-read figures of one case: "<instructions> <d1 misses> <l2 misses>".
measure() {
  local case=$1 out="$work/$1.out" sim reads
  sim=$(TIERCACHE_BENCH_SIM="$case" valgrind --tool=callgrind --cache-sim=yes \
          --D1=32768,8,64 --LL=1048576,16,64 --toggle-collect='*SimulatedReads*' \
          --callgrind-out-file="$out" "$bin" 2>"$work/$case.log") ||
    { cat "$work/$case.log" >&2; echo "bench-l1-sim: case $case failed" >&2; return 1; }
  # "SIM <case> <reads> <misses>"; callgrind's "events:" line names the
  # columns of its "summary:" (or, older, "totals:") line.
  reads=$(awk '$1 == "SIM" { print $3 }' <<<"$sim")
  [ -n "$reads" ] && [ "$reads" -gt 0 ] || { echo "bench-l1-sim: case $case printed no SIM line" >&2; return 1; }
  awk -v reads="$reads" '
    /^events:/ { for (i = 2; i <= NF; ++i) col[$i] = i - 1 }
    /^(summary|totals):/ && !done { for (i = 2; i <= NF; ++i) v[i - 1] = $i; done = 1 }
    END {
      if (!done || !("Ir" in col) || v[col["Ir"]] <= 0) exit 1
      d1 = v[col["D1mr"]] + v[col["D1mw"]]; ll = v[col["DLmr"]] + v[col["DLmw"]]
      printf "%.1f %.2f %.2f\n", v[col["Ir"]] / reads, d1 / reads, ll / reads
    }' "$out" || { echo "bench-l1-sim: case $case: no event totals in $out" >&2; return 1; }
}

declare -A fig
cases=(l1_1k l1_10k l1sketching_1k l1sketching_10k mutex_1k mutex_10k)
for c in "${cases[@]}"; do
  line=$(measure "$c") || exit 1
  read -r ir d1 l2 <<<"$line"
  printf '%-16s per read: %8s instructions %6s L1d misses %6s L2 misses\n' "$c" "$ir" "$d1" "$l2"
  fig[$c.ir]=$ir; fig[$c.d1]=$d1; fig[$c.l2]=$l2
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
for n in 1k 10k; do
  sfx=$([ "$n" = 1k ] && echo "" || echo "_10k")
  for c in l1 l1sketching mutex; do
    name=$([ "$c" = mutex ] && echo mutex_lru_sim || echo "${c}_sim")
    echo "RESULT ${name}_hit_instructions$sfx ${fig[${c}_$n.ir]} instructions"
    echo "RESULT ${name}_hit_d1_misses$sfx ${fig[${c}_$n.d1]} misses"
    echo "RESULT ${name}_hit_l2_misses$sfx ${fig[${c}_$n.l2]} misses"
  done
  echo "RESULT l1_sim_vs_mutex_instructions$sfx $(ratio "${fig[l1_$n.ir]}" "${fig[mutex_$n.ir]}") x"
  echo "RESULT l1_sim_vs_mutex_l2_misses$sfx $(ratio "${fig[l1_$n.l2]}" "${fig[mutex_$n.l2]}") x"
done
