#!/usr/bin/env bash
# Test of scripts/demo_report.py: builds a synthetic report directory (two
# drills: one with both modes, one with only tiercache and an all-empty column),
# runs the generator, checks that every chart the page shows is a non-empty SVG
# and that headless Chromium loads all of them (data-charts="N/N", N > 0).
# Then checks the error paths: missing and malformed CSVs (a note, exit 0),
# an unusable summary.json (exit 2) and a missing gnuplot (exit 1).
#
#   tests/demo/report_test.sh
#
# Needs python3, gnuplot (gnuplot-nox) and chromium (Debian packages); a
# missing one fails the test. Environment: PYTHON (default /usr/bin/python3
# when present), CHROMIUM (default chromium), KEEP=1 keeps the temp directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
gen="$repo/scripts/demo_report.py"

fail() { echo "report_test: FAIL: $*" >&2; exit 1; }
step() { echo "report_test: $*"; }

if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif [ -x /usr/bin/python3 ]; then py=/usr/bin/python3
else py=python3; fi
command -v "$py" >/dev/null 2>&1 || fail "python3 not found ($py)"
command -v gnuplot >/dev/null 2>&1 \
  || fail "gnuplot not found on PATH; install it: apt-get install --no-install-recommends gnuplot-nox"
chromium="${CHROMIUM:-chromium}"
command -v "$chromium" >/dev/null 2>&1 \
  || fail "chromium not found ('$chromium' is not on PATH); the page is checked in headless Chromium: apt-get install --no-install-recommends chromium"
[ -f "$gen" ] || fail "$gen is missing"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/report_test.XXXXXX")"
if [ "${KEEP:-0}" = 1 ]; then
  echo "report_test: keeping $tmp"
else
  trap 'rm -rf "$tmp"' EXIT
fi

# ---------------------------------------------------------------- synthetic data
rep="$tmp/report"
mkdir -p "$rep/data"
"$py" - "$rep" <<'EOF'
import json, math, os, sys
rep = sys.argv[1]
header = ("t_s,requests,errors,timeouts,p50_ms,p99_ms,p999_ms,max_ms,"
          "db_queries_per_s,l1_hit_ratio,l2_hit_ratio,vis_lag_p99_ms")

def fmt(v):
    return "" if v is None else ("%d" % v if isinstance(v, int) else "%.3f" % v)

def write(name, rows):
    with open(os.path.join(rep, "data", name), "w") as f:
        f.write(header + "\n")
        for r in rows:
            f.write(",".join(fmt(v) for v in r) + "\n")

# Drill "peak", both modes, 60 s; the cache warms up over the first seconds.
tc, nc = [], []
for t in range(61):
    wob = 1 + 0.15 * math.sin(t * 0.7)
    warm = min(1.0, (t + 1) / 8)
    vis = None if t % 9 == 4 else 20 + 15 * wob          # no writes some seconds
    tc.append([t, 2000, 0, 0, 1.2 * wob, (60 - 50 * warm) * wob, 25 * wob, 40 * wob,
               2000 * (1 - 0.97 * warm), 0.9 * warm, 0.6 * warm, vis])
    nc.append([t, 2000, 1 if t == 30 else 0, 0, 80 * wob, 800 * wob, 1200 * wob,
               1500 * wob, 2000 * wob, None, None, None])
write("peak__tiercache.csv", tc)
write("peak__nocache.csv", nc)

# Drill "outage", only tiercache, vis_lag all empty, a gap in the data
# (seconds 20-24 have no latency) and one second alone between gaps.
rows = []
for t in range(40):
    p99 = None if 20 <= t <= 24 or t == 26 else 8.0 + (t % 5)
    rows.append([t, 0 if p99 is None else 1500, 0, 0, None if p99 is None else 1.0, p99,
                 None if p99 is None else p99 * 2, None if p99 is None else p99 * 3,
                 30 + t, 0.8, 0.5, None])
write("outage__tiercache.csv", rows)

summary = {
    "generated_at": "2026-12-06T18:00:00Z",
    "machine": "2 cores, 24 GiB",
    "config": {"l1_capacity": 100000, "l2": "redis 7", "ttl (s)": 300, "nested": {"a": 1}},
    "drills": [
        {"id": "peak", "title": "1. Peak", "description": "Steady peak load <b>not bold</b>.",
         "phases": [{"t": 0, "label": "warm-up"}, {"t": 10, "label": "measure"},
                    {"t": 50, "label": "cool-down"}],
         "modes": {
             "tiercache": {"csv": "data/peak__tiercache.csv",
                           "summary": {"rate (req/s)": 2000, "p99 (ms)": 12.3, "errors": 0}},
             "nocache": {"csv": "data/peak__nocache.csv",
                         "summary": {"rate (req/s)": 2000, "p99 (ms)": 812.0, "errors": 3,
                                     "db q/s": None}}},
         "notes": ["free text line one", "line two"]},
        {"id": "outage", "title": "2. L2 outage", "description": "Redis goes away for five seconds.",
         "phases": [{"t": 0, "label": "steady"}, {"t": 20, "label": "redis down"},
                    {"t": 25, "label": "redis back"}],
         "modes": {"tiercache": {"csv": "data/outage__tiercache.csv",
                                 "summary": {"p99 (ms)": 11.0, "stale reads": "none"}}},
         "notes": []},
    ],
    "results": [
        {"name": "demo_peak_p99_ms", "value": 12.3, "unit": "ms", "goal": "< 50", "met": True},
        {"name": "demo_outage_errors", "value": 4, "unit": "", "goal": "0", "met": False},
        {"name": "demo_info", "value": None, "unit": "", "goal": "", "met": None},
    ],
}
with open(os.path.join(rep, "data", "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
EOF

# ---------------------------------------------------------------- generate
step "generating the report"
if ! "$py" "$gen" "$rep" >"$tmp/gen.out" 2>"$tmp/gen.err"; then
  cat "$tmp/gen.out" "$tmp/gen.err" >&2
  fail "demo_report.py exited non-zero on good input"
fi
if [ -s "$tmp/gen.err" ]; then
  cat "$tmp/gen.err" >&2
  fail "demo_report.py warned on good input"
fi
page="$rep/index.html"
[ -s "$page" ] || fail "index.html not written"

mapfile -t srcs < <(grep -o '<img [^>]*src="[^"]*"' "$page" | sed 's/.*src="\([^"]*\)"/\1/')
n=${#srcs[@]}
imgs=$(grep -o '<img ' "$page" | wc -l)
[ "$n" -gt 0 ] || fail "the page has no chart"
[ "$n" -eq "$imgs" ] || fail "$imgs <img> tags but $n with a src"
# peak: p99, DB, hit ratio, vis lag; outage: p99, DB, hit ratio (vis lag all empty).
[ "$n" -eq 7 ] || fail "expected 7 charts (4 + 3, the empty vis-lag chart skipped), the page has $n: ${srcs[*]}"
for s in "${srcs[@]}"; do
  f="$rep/$s"
  [ -s "$f" ] || fail "chart $s is missing or empty"
  grep -q '<svg' "$f" && grep -q '</svg>' "$f" || fail "chart $s is not an SVG"
done
grep -q 'outage__vislag' "$page" && fail "the all-empty vis-lag chart of 'outage' was drawn"
grep -q 'No data, no chart: visibility lag' "$page" || fail "the skipped chart is not mentioned"
grep -q '&lt;b&gt;not bold&lt;/b&gt;' "$page" || fail "the description is not HTML-escaped"
grep -q 'class="met yes"' "$page" && grep -q 'class="met no"' "$page" || fail "met marks missing"
grep -q 'http' "$page" && fail "the page refers to the network"
step "$n charts, all non-empty SVG"

# ---------------------------------------------------------------- chromium
step "rendering in headless Chromium"
rc=0
timeout 180 "$chromium" --headless --no-sandbox --disable-gpu --no-first-run \
  --user-data-dir="$tmp/chromium-profile" --virtual-time-budget=5000 \
  --dump-dom "file://$page" >"$tmp/dom.html" 2>"$tmp/chromium.err" || rc=$?
if [ "$rc" -ne 0 ] || [ ! -s "$tmp/dom.html" ]; then
  tail -n 20 "$tmp/chromium.err" >&2
  fail "chromium exited $rc without a DOM"
fi
line=$(grep -o 'data-charts="[^"]*"' "$tmp/dom.html" || true)
echo "report_test: chromium: ${line:-no data-charts attribute}"
[ "$line" = "data-charts=\"$n/$n\"" ] || fail "expected data-charts=\"$n/$n\", got: ${line:-nothing}"

# ---------------------------------------------------------------- bad CSVs
step "missing and malformed CSVs"
bad="$tmp/bad"
mkdir -p "$bad/data"
cp "$rep/data/summary.json" "$bad/data/"
cp "$rep/data/peak__tiercache.csv" "$bad/data/"
printf 't_s,requests\n0,1\n' >"$bad/data/outage__tiercache.csv"   # wrong header
# peak__nocache.csv is missing
rc=0
"$py" "$gen" "$bad" >"$tmp/bad.out" 2>"$tmp/bad.err" || rc=$?
[ "$rc" -eq 0 ] || { cat "$tmp/bad.err" >&2; fail "bad CSVs: exit $rc, expected 0"; }
grep -q 'peak__nocache.csv is missing' "$bad/index.html" || fail "no note in the page for the missing CSV"
grep -q 'outage__tiercache.csv has an unexpected header' "$bad/index.html" \
  || fail "no note in the page for the malformed CSV"
grep -q 'warning: .*peak__nocache.csv is missing' "$tmp/bad.err" || fail "no warning on stderr for the missing CSV"
grep -q 'warning: .*unexpected header' "$tmp/bad.err" || fail "no warning on stderr for the malformed CSV"

# ---------------------------------------------------------------- bad summary.json
step "unusable summary.json"
for body in '{"drills": ' '[1, 2]' '{"drills": 3}'; do
  printf '%s' "$body" >"$bad/data/summary.json"
  rc=0
  "$py" "$gen" "$bad" >/dev/null 2>"$tmp/sum.err" || rc=$?
  [ "$rc" -eq 2 ] || fail "summary.json '$body': exit $rc, expected 2"
  grep -q 'summary.json' "$tmp/sum.err" || fail "summary.json '$body': no error message"
done
rm "$bad/data/summary.json"
rc=0; "$py" "$gen" "$bad" >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "missing summary.json: exit $rc, expected 2"

# ---------------------------------------------------------------- no gnuplot
step "gnuplot missing"
rc=0
GNUPLOT="$tmp/no-such-gnuplot" "$py" "$gen" "$rep" >/dev/null 2>"$tmp/nogp.err" || rc=$?
[ "$rc" -eq 1 ] || fail "gnuplot missing: exit $rc, expected 1"
grep -q 'gnuplot not found' "$tmp/nogp.err" || fail "gnuplot missing: no clear message"

echo "report_test: all checks passed ($n charts, chromium $line)"
