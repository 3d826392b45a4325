#!/usr/bin/env python3
"""Turn a demo report directory into charts and one self-contained HTML page.

Usage:
    scripts/demo_report.py [REPORT_DIR]        (default: demo-report)

Reads REPORT_DIR/data/summary.json and the per-second CSVs it names (written
by the drill runner of `make demo`), draws SVG charts with gnuplot into
REPORT_DIR/charts/ and writes REPORT_DIR/index.html. The page needs no network
and no JavaScript library; open it straight from disk.

Per drill the page shows the title, the description, a side-by-side summary
table (tiercache / no cache) and up to four charts over the drill's time:
p99 latency (log scale, both modes, phases as labelled vertical lines), DB
queries/s (both modes), hit ratio per tier (L1, L2; tiercache mode) and
visibility-lag p99. A chart with no data at all is left out. tiercache is
always blue, no cache always orange.

A missing or malformed CSV is shown as a note on the page and a warning on
stderr; the page is still written.

Exit status:
    0  the page was written (warnings, if any, on stderr)
    1  gnuplot is missing or the page could not be written
    2  REPORT_DIR/data/summary.json is missing or unusable, or bad arguments

Needs python3 (standard library only, 3.9 or newer) and gnuplot (Debian
package gnuplot-nox). The environment variable GNUPLOT names another gnuplot
binary.
"""

import csv
import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

CSV_COLUMNS = [
    "t_s", "requests", "errors", "timeouts", "p50_ms", "p99_ms", "p999_ms",
    "max_ms", "db_queries_per_s", "l1_hit_ratio", "l2_hit_ratio", "vis_lag_p99_ms",
]
MODES = [("tiercache", "tiercache"), ("nocache", "no cache")]
COLOR = {"tiercache": "#1f63c6", "nocache": "#e8590c"}
PHASE_COLOR = "#8a8a8a"
CHART_W, CHART_H = 560, 300
DASH = "\u2014"  # shown for a missing value
LOG_FLOOR_MS = 0.01  # a p99 of 0 ms is drawn here on the log scale

WARNINGS = []


def warn(msg):
    WARNINGS.append(msg)
    print("demo_report: warning: " + msg, file=sys.stderr)


def die(code, msg):
    print("demo_report: error: " + msg, file=sys.stderr)
    sys.exit(code)


def esc(value):
    return html.escape(str(value), quote=True)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt_value(v):
    """A summary or result value as text: numbers rounded for reading."""
    if v is None:
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return "{:,}".format(v) if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return DASH
        a = abs(v)
        if a == 0:
            return "0"
        if a < 1:
            text = "{:.3g}".format(v)
            return text if "e" not in text else "{:.2e}".format(v)
        digits = 0 if a >= 100 else 1 if a >= 10 else 2
        text = ("{:,.%df}" % digits).format(v) if a >= 10000 else ("{:.%df}" % digits).format(v)
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    if isinstance(v, str):
        return v if v != "" else DASH
    return json.dumps(v, ensure_ascii=False)


# ---------------------------------------------------------------- input

def load_summary(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        die(2, "%s: not found" % path)
    except (OSError, UnicodeDecodeError) as e:
        die(2, "%s: cannot read: %s" % (path, e))
    except json.JSONDecodeError as e:
        die(2, "%s: not valid JSON: %s" % (path, e))
    if not isinstance(data, dict):
        die(2, "%s: the top level must be a JSON object" % path)
    drills = data.get("drills")
    if not isinstance(drills, list):
        die(2, "%s: \"drills\" must be a list" % path)
    return data


class Series:
    """One mode's per-second CSV: t values and one list per column (None = empty)."""

    def __init__(self):
        self.t = []
        self.cols = {c: [] for c in CSV_COLUMNS[1:]}

    def column(self, name):
        return list(zip(self.t, self.cols[name]))

    def has(self, name):
        return any(v is not None for v in self.cols[name])


def read_csv(report_dir, rel, label):
    """Returns (Series or None, list of problem notes)."""
    notes = []
    if rel is None:  # a drill without per-second data (e.g. the stampede)
        return None, notes
    if not isinstance(rel, str) or not rel:
        notes.append("%s: no CSV named in summary.json" % label)
        return None, notes
    path = rel if os.path.isabs(rel) else os.path.join(report_dir, rel)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        notes.append("%s: CSV %s is missing" % (label, rel))
        return None, notes
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        notes.append("%s: CSV %s cannot be read (%s)" % (label, rel, e))
        return None, notes
    if not rows:
        notes.append("%s: CSV %s is empty (no header)" % (label, rel))
        return None, notes
    header = [h.strip() for h in rows[0]]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        notes.append("%s: CSV %s has an unexpected header (missing %s)"
                     % (label, rel, ", ".join(missing)))
        return None, notes
    extra = [h for h in header if h not in CSV_COLUMNS]
    if extra:
        warn("%s: CSV %s: ignoring extra columns %s" % (label, rel, ", ".join(extra)))
    index = {c: header.index(c) for c in CSV_COLUMNS}

    by_t = {}
    bad = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not x.strip() for x in row):
            continue
        if len(row) != len(header):
            bad.append("line %d has %d fields, not %d" % (lineno, len(row), len(header)))
            continue
        try:
            t = float(row[index["t_s"]])
            if not math.isfinite(t):
                raise ValueError
        except ValueError:
            bad.append("line %d: t_s %r is not a number" % (lineno, row[index["t_s"]]))
            continue
        values = {}
        for c in CSV_COLUMNS[1:]:
            raw = row[index[c]].strip()
            if raw == "":
                values[c] = None
                continue
            try:
                v = float(raw)
            except ValueError:
                v = None
            if v is None or not math.isfinite(v):
                bad.append("line %d: %s %r is not a number" % (lineno, c, raw))
                v = None
            values[c] = v
        by_t[t] = values
    series = Series()
    for t in sorted(by_t):
        series.t.append(t)
        for c in CSV_COLUMNS[1:]:
            series.cols[c].append(by_t[t][c])
    if bad:
        notes.append("%s: CSV %s is partly malformed, %d problem(s) left out (first: %s)"
                     % (label, rel, len(bad), bad[0]))
    if not series.t:
        notes.append("%s: CSV %s has no data rows" % (label, rel))
        return None, notes
    return series, notes


# ---------------------------------------------------------------- charts

def gp_str(text):
    """A gnuplot single-quoted string (no enhanced text, one line)."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    return "'" + text.replace("'", "''") + "'"


def slug(text):
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return s[:60] or "drill"


class Chart:
    def __init__(self, kind, title, ylabel, alt):
        self.kind = kind
        self.title = title
        self.ylabel = ylabel
        self.alt = alt
        self.lines = []  # (legend, color, dashtype, [(t, v)])
        self.log = False
        self.yrange = "[0:*]"

    def add(self, legend, color, points, dash=1):
        pts = [(t, v) for t, v in points]
        if any(v is not None for _, v in pts):
            self.lines.append((legend, color, dash, pts))

    def empty(self):
        return not self.lines


def phase_rows(phases, xmax):
    """Places phase labels above the frame: (t, label, row); row -1 means no room.

    Labels are centred on their line, in the first of two rows where they do not
    touch a label already placed (widths estimated from a 9 pt font)."""
    plot_px = CHART_W - 9 * 7 - 3 * 7  # width of the frame, about
    placed = [[], []]
    out = []
    for t, label in sorted(phases):
        if t < 0 or t > xmax or xmax <= 0:
            continue
        x = t / xmax * plot_px
        width = len(label) * 5.4 + 6
        align, lo, hi = "center", x - width / 2, x + width / 2
        if hi > plot_px + 18:  # would run off the right edge: end at the line
            align, lo, hi = "right", x - width, x
        elif lo < -55:  # past the left margin: start at the line
            align, lo, hi = "left", x, x + width
        row = -1
        for r in (0, 1):
            if all(lo >= b or hi <= a for a, b in placed[r]):
                row = r
                placed[r].append((lo, hi))
                break
        out.append((float(t), label, align, row if label.strip() else -1))
    return out


def write_chart(chart, phases, xmax, gnuplot, tmpdir, out_path):
    """Draws the chart as SVG; returns None on success or an error text."""
    rows = phase_rows(phases, xmax)
    nrows = max([r for _, _, _, r in rows], default=-1) + 1
    script = [
        "set terminal svg size %d,%d fixed font 'sans,11' background '#ffffff' noenhanced"
        % (CHART_W, CHART_H),
        "set output %s" % gp_str(out_path),
        "set encoding utf8",
        # Title top left, key top right, both above the frame; phase labels
        # in one or two rows just above the frame.
        "set label 1 %s at screen 0.015, screen 0.955 left font 'sans,12'" % gp_str(chart.title),
        "set key at screen 0.985, screen 0.985 right top horizontal reverse Left samplen 2.5 width 1",
        "set border 3 lc rgb '#555555'",
        "set tics nomirror out scale 0.6",
        "set grid ytics lc rgb '#e6e6e6' lw 1 dt 1",
        "set xlabel 's since drill start' offset 0,0.4",
        "set ylabel %s offset 1,0" % gp_str(chart.ylabel),
        "set lmargin 9",
        "set rmargin 3",
        "set bmargin 3.2",
        "set tmargin %.1f" % (2.0 + 1.0 * nrows),
        "set xrange [0:%r]" % float(max(xmax, 1)),
    ]
    values = [v for _, _, _, pts in chart.lines for _, v in pts if v is not None]
    if chart.log:
        # Whole decades around the data, at least one.
        lo = math.floor(math.log10(min(values)))
        hi = math.ceil(math.log10(max(values)))
        if hi <= lo:
            hi = lo + 1
        script += ["set logscale y 10", "set yrange [1e%d:1e%d]" % (lo, hi),
                   "set format y '%g'", "set mytics 10"]
    elif chart.yrange == "[0:*]" and max(values) <= 0:
        script += ["set yrange [%s:1]" % ("0" if min(values) >= 0 else "*")]
    elif chart.yrange == "[0:*]" and min(values) < 0:
        script += ["set yrange [*:*]"]
    else:
        script += ["set yrange %s" % chart.yrange]
    for t, label, align, row in rows:
        script.append("set arrow from %r, graph 0 to %r, graph 1 nohead back lc rgb '%s' dt 2 lw 1"
                      % (t, t, PHASE_COLOR))
        if row < 0:
            continue
        script.append("set label %s at %r, graph 1 offset 0, %.2f %s front tc rgb '#555555' font 'sans,9'"
                      % (gp_str(label), t, 0.55 + 1.0 * row, align))
    plots = []
    for n, (legend, color, dash, pts) in enumerate(chart.lines):
        data_path = os.path.join(tmpdir, "%s_%d.dat" % (chart.kind, n))
        with open(data_path, "w", encoding="utf-8") as f:
            prev_t = None
            for t, v in pts:
                # A blank line breaks the line: at an empty value or a gap in seconds.
                if v is None:
                    prev_t = None
                    continue
                if prev_t is not None and t - prev_t > 1.5:
                    f.write("\n")
                elif prev_t is None:
                    f.write("\n")
                f.write("%r %r\n" % (float(t), float(v)))
                prev_t = t
        style = "lines lw 1.8 dt %d lc rgb '%s'" % (dash, color)
        plots.append("%s using 1:2 with %s title %s" % (gp_str(data_path), style, gp_str(legend)))
        # A point alone between gaps is invisible as a line: draw it as a dot.
        dots_path = data_path + ".dots"
        with open(dots_path, "w", encoding="utf-8") as f:
            for i, (t, v) in enumerate(pts):
                if v is None:
                    continue
                left = i > 0 and pts[i - 1][1] is not None and t - pts[i - 1][0] <= 1.5
                right = (i + 1 < len(pts) and pts[i + 1][1] is not None
                         and pts[i + 1][0] - t <= 1.5)
                if not left and not right:
                    f.write("%r %r\n" % (float(t), float(v)))
        if os.path.getsize(dots_path) > 0:
            plots.append("%s using 1:2 with points pt 7 ps 0.45 lc rgb '%s' notitle"
                         % (gp_str(dots_path), color))
    script.append("plot " + ", \\\n     ".join(plots))
    script.append("unset output")
    script_path = os.path.join(tmpdir, chart.kind + ".gp")
    with open(script_path, "w", encoding="utf-8") as f:
        f.write("\n".join(script) + "\n")
    try:
        proc = subprocess.run([gnuplot, script_path], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return "gnuplot failed: %s" % e
    message = " ".join(ln.strip() for ln in proc.stderr.splitlines() if ln.strip())
    if proc.returncode != 0:
        return "gnuplot failed (exit %d): %s" % (proc.returncode, message[-300:] or "no message")
    try:
        with open(out_path, "rb") as f:
            svg = f.read()
    except OSError as e:
        return "gnuplot wrote no chart: %s" % e
    if b"<svg" not in svg[:4096] or b"</svg>" not in svg[-4096:]:
        return "gnuplot wrote no complete SVG"
    if message:
        warn("gnuplot said for %s: %s" % (os.path.basename(out_path), message[-300:]))
    return None


def build_charts(drill_id, series, phases, gnuplot, charts_dir, tmp_root):
    """Returns (list of (file name, chart), list of skipped chart titles, notes)."""
    xmax = 0.0
    for s in series.values():
        if s.t:
            xmax = max(xmax, s.t[-1])
    for t, _ in phases:
        xmax = max(xmax, t)

    charts = []
    c = Chart("p99", "p99 latency (ms, log scale)", "ms",
              "p99 latency per second, log scale, tiercache and no cache")
    c.log = True
    for mode, label in MODES:
        if mode in series:
            pts = [(t, None if v is None else max(v, LOG_FLOOR_MS))
                   for t, v in series[mode].column("p99_ms")]
            c.add(label, COLOR[mode], pts)
    charts.append(c)

    c = Chart("db", "DB queries per second", "queries/s",
              "database queries per second, tiercache and no cache")
    for mode, label in MODES:
        if mode in series:
            c.add(label, COLOR[mode], series[mode].column("db_queries_per_s"))
    charts.append(c)

    c = Chart("hit", "hit ratio per tier (tiercache)", "% hits",
              "cache hit ratio per second for L1 and L2")
    c.yrange = "[0:105]"
    if "tiercache" in series:
        s = series["tiercache"]
        for col, legend, dash in (("l1_hit_ratio", "L1", 1), ("l2_hit_ratio", "L2", 2)):
            pts = [(t, None if v is None else 100.0 * v) for t, v in s.column(col)]
            c.add(legend, COLOR["tiercache"], pts, dash)
    charts.append(c)

    c = Chart("vislag", "visibility lag p99 (ms)", "ms",
              "p99 delay until a write is visible to readers")
    for mode, label in MODES:
        if mode in series:
            c.add(label, COLOR[mode], series[mode].column("vis_lag_p99_ms"))
    charts.append(c)

    done, skipped, notes = [], [], []
    for chart in charts:
        if chart.empty():
            skipped.append(chart.title)
            continue
        name = "%s__%s.svg" % (drill_id, chart.kind)
        out_path = os.path.join(charts_dir, name)
        tmpdir = tempfile.mkdtemp(prefix=chart.kind + "_", dir=tmp_root)
        err = write_chart(chart, phases, xmax, gnuplot, tmpdir, out_path)
        if err:
            notes.append("chart \u201c%s\u201d: %s" % (chart.title, err))
            try:
                os.remove(out_path)
            except OSError:
                pass
            continue
        done.append((name, chart))
    return done, skipped, notes


# ---------------------------------------------------------------- page

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #222; background: #fafafa; margin: 0; }
main { max-width: 1240px; margin: 0 auto; padding: 16px 20px 48px; }
h1 { font-size: 1.6em; margin: 0.4em 0 0.2em; }
h2 { font-size: 1.3em; margin: 0 0 0.3em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
.meta { color: #555; margin: 0 0 0.8em; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: 18px; height: 4px; vertical-align: middle; margin-right: 6px; }
table { border-collapse: collapse; margin: 0.4em 0 1em; background: #fff; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.met { text-align: center; font-weight: 700; }
.yes { color: #1a7f37; } .no { color: #c62828; } .unknown { color: #777; }
section.drill { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px;
                padding: 16px 20px; margin: 20px 0; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; flex: 1 1 440px; max-width: 562px; }
figure img { display: block; width: 100%; max-width: 560px; height: auto; border: 1px solid #eee; }
.note { background: #fff4e5; border-left: 4px solid #e8590c; padding: 6px 10px; margin: 6px 0; }
.muted { color: #777; font-size: 0.9em; }
nav ul { margin: 0.2em 0 0.8em; padding-left: 1.2em; }
ul.notes { margin: 0.4em 0; }
""".strip()

SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.getElementsByTagName("img"), loaded = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) loaded++;
  }
  document.body.dataset.charts = loaded + "/" + imgs.length;
});
""".strip()


def num_class(v):
    return ' class="num"' if is_number(v) else ""


def kv_table(obj):
    rows = []
    for k, v in obj.items():
        rows.append("<tr><th>%s</th><td%s>%s</td></tr>" % (esc(k), num_class(v), esc(fmt_value(v))))
    return "<table>%s</table>" % "".join(rows)


def results_table(results):
    if not isinstance(results, list) or not results:
        return '<p class="muted">No results.</p>'
    out = ["<table><tr><th>name</th><th>value</th><th>unit</th><th>goal</th><th>met</th></tr>"]
    for r in results:
        if not isinstance(r, dict):
            warn("results: an entry is not an object, left out")
            continue
        met = r.get("met")
        if met is True:
            mark = '<td class="met yes" title="met">\u2713</td>'
        elif met is False:
            mark = '<td class="met no" title="not met">\u2717</td>'
        else:
            mark = '<td class="met unknown">%s</td>' % DASH
        v = r.get("value")
        out.append("<tr><td>%s</td><td%s>%s</td><td>%s</td><td>%s</td>%s</tr>" % (
            esc(fmt_value(r.get("name"))), num_class(v), esc(fmt_value(v)),
            esc(fmt_value(r.get("unit"))) if r.get("unit") not in (None, "") else "",
            esc(fmt_value(r.get("goal"))) if r.get("goal") not in (None, "") else "", mark))
    out.append("</table>")
    return "".join(out)


def summary_table(modes):
    keys = []
    for mode, _ in MODES:
        s = modes.get(mode, {}).get("summary") if isinstance(modes.get(mode), dict) else None
        if isinstance(s, dict):
            for k in s:
                if k not in keys:
                    keys.append(k)
    head = ["<tr><th></th>"]
    for mode, label in MODES:
        head.append("<th>%s%s</th>" % (
            '<span class="swatch" style="background:%s"></span>' % COLOR[mode], esc(label)
            + ("" if mode in modes else ' <span class="muted">(not run)</span>')))
    head.append("</tr>")
    if not keys:
        return '<p class="muted">No summary values.</p>'
    rows = []
    for k in keys:
        cells = []
        for mode, _ in MODES:
            m = modes.get(mode)
            s = m.get("summary") if isinstance(m, dict) else None
            v = s.get(k) if isinstance(s, dict) else None
            cells.append("<td%s>%s</td>" % (num_class(v), esc(fmt_value(v))))
        rows.append("<tr><th>%s</th>%s</tr>" % (esc(k), "".join(cells)))
    return "<table>%s%s</table>" % ("".join(head), "".join(rows))


def paragraphs(text):
    if not isinstance(text, str) or not text.strip():
        return ""
    parts = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "".join("<p>%s</p>" % esc(p) for p in parts)


def parse_phases(drill_label, phases):
    out = []
    if phases is None:
        return out
    if not isinstance(phases, list):
        warn("%s: \"phases\" is not a list, ignored" % drill_label)
        return out
    for p in phases:
        if isinstance(p, dict) and is_number(p.get("t")) and math.isfinite(p["t"]):
            out.append((float(p["t"]), str(p.get("label", ""))))
        else:
            warn("%s: phase %r ignored (needs a number t and a label)" % (drill_label, p))
    return out


def render_drill(report_dir, drill, index, used_ids, gnuplot, charts_dir, tmp_root):
    if not isinstance(drill, dict):
        msg = "drill #%d in summary.json is not an object, left out" % (index + 1)
        warn(msg)
        return "", '<section class="drill"><p class="note">%s</p></section>' % esc(msg)
    raw_id = drill.get("id")
    drill_id = slug(raw_id if raw_id not in (None, "") else "drill-%d" % (index + 1))
    base, n = drill_id, 2
    while drill_id in used_ids:
        drill_id = "%s-%d" % (base, n)
        n += 1
    used_ids.add(drill_id)
    title = drill.get("title") or raw_id or "drill %d" % (index + 1)
    notes = []

    modes = drill.get("modes")
    if not isinstance(modes, dict):
        if modes is not None:
            notes.append("\"modes\" is not an object")
        modes = {}
    for m in modes:
        if m not in dict(MODES):
            warn("%s: unknown mode %r ignored" % (title, m))
    modes = {m: v for m, v in modes.items() if m in dict(MODES) and isinstance(v, dict)}

    series = {}
    for mode, label in MODES:
        if mode not in modes:
            continue
        s, problems = read_csv(report_dir, modes[mode].get("csv"), label)
        notes.extend(problems)
        if s is not None:
            series[mode] = s

    phases = parse_phases(title, drill.get("phases"))
    charts, skipped, chart_notes = build_charts(drill_id, series, phases, gnuplot, charts_dir, tmp_root)
    notes.extend(chart_notes)
    for n_ in notes:
        warn("%s: %s" % (title, n_))

    out = ['<section class="drill" id="drill-%s">' % esc(drill_id)]
    out.append("<h2>%s</h2>" % esc(title))
    out.append(paragraphs(drill.get("description")))
    for n_ in notes:
        out.append('<p class="note">\u26a0 %s</p>' % esc(n_))
    out.append(summary_table(modes))
    if phases:
        out.append('<p class="muted">Phases: %s</p>' % esc(
            ", ".join("%s at %ss" % (lbl or "(unnamed)", fmt_value(int(t) if t == int(t) else t))
                      for t, lbl in phases)))
    if charts:
        out.append('<div class="charts">')
        for name, chart in charts:
            out.append('<figure><img src="charts/%s" width="%d" height="%d" alt="%s"></figure>'
                       % (esc(name), CHART_W, CHART_H, esc(chart.alt)))
        out.append("</div>")
    if skipped:
        out.append('<p class="muted">No data, no chart: %s.</p>' % esc(", ".join(skipped)))
    dnotes = drill.get("notes")
    if isinstance(dnotes, str):
        dnotes = [dnotes]
    if isinstance(dnotes, list) and dnotes:
        out.append('<ul class="notes">%s</ul>' % "".join("<li>%s</li>" % esc(x) for x in dnotes))
    out.append("</section>")
    return '<li><a href="#drill-%s">%s</a></li>' % (esc(drill_id), esc(title)), "\n".join(out)


def render_page(report_dir, data, gnuplot):
    charts_dir = os.path.join(report_dir, "charts")
    os.makedirs(charts_dir, exist_ok=True)
    for old in os.listdir(charts_dir):  # charts of an earlier run
        if old.endswith(".svg"):
            try:
                os.remove(os.path.join(charts_dir, old))
            except OSError:
                pass

    head = ["<h1>tiercache demo report</h1>"]
    meta = []
    if data.get("generated_at") is not None:
        meta.append("generated %s" % esc(data["generated_at"]))
    if data.get("machine") is not None:
        meta.append("machine: %s" % esc(fmt_value(data["machine"])))
    if meta:
        head.append('<p class="meta">%s</p>' % " &middot; ".join(meta))
    head.append('<p class="legend">%s</p>' % "".join(
        '<span><span class="swatch" style="background:%s"></span>%s</span>' % (COLOR[m], esc(lbl))
        for m, lbl in MODES))
    config = data.get("config")
    if isinstance(config, dict) and config:
        head.append("<h3>Configuration</h3>" + kv_table(config))
    elif config not in (None, {}):
        warn("\"config\" is not an object, not shown")
    head.append("<h3>Results</h3>" + results_table(data.get("results")))

    toc, sections, used = [], [], set()
    with tempfile.TemporaryDirectory(prefix="demo_report_") as tmp_root:
        for i, drill in enumerate(data["drills"]):
            item, section = render_drill(report_dir, drill, i, used, gnuplot, charts_dir, tmp_root)
            if item:
                toc.append(item)
            sections.append(section)
    if toc:
        head.append("<nav><h3>Drills</h3><ul>%s</ul></nav>" % "".join(toc))
    if not sections:
        sections.append('<p class="muted">No drills.</p>')

    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>tiercache demo report</title>",
        "<style>\n%s\n</style>" % CSS,
        "</head><body><main>",
        "\n".join(head),
        "\n".join(sections),
        "</main>",
        "<script>\n%s\n</script>" % SCRIPT,
        "</body></html>",
        "",
    ])
    out_path = os.path.join(report_dir, "index.html")
    tmp_path = out_path + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp_path, out_path)
    return out_path


def main(argv):
    args = argv[1:]
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: demo_report.py [REPORT_DIR]", file=sys.stderr)
        return 2
    report_dir = args[0] if args else "demo-report"
    if not os.path.isdir(report_dir):
        die(2, "%s: no such report directory" % report_dir)
    data = load_summary(os.path.join(report_dir, "data", "summary.json"))

    gnuplot = os.environ.get("GNUPLOT") or "gnuplot"
    found = shutil.which(gnuplot)
    if not found:
        die(1, "gnuplot not found (%s); install it: apt-get install gnuplot-nox "
               "(scripts/setup.sh does)" % gnuplot)

    try:
        out_path = render_page(report_dir, data, found)
    except OSError as e:
        die(1, "cannot write the report: %s" % e)
    print("demo_report: wrote %s (%d warning(s))" % (out_path, len(WARNINGS)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
