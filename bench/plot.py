#!/usr/bin/env python3
"""Draws bench.sh's results as one SVG (no plotting library needed): per scenario, the
median requests/s with its min-max over the rounds, and the median p99 latency; when the
results hold several concurrency levels (a `conns` column), also p99 against concurrency.

    bench/plot.py .run/bench/<run>/results.tsv bench/results.svg
"""
import csv
import statistics
import sys
from collections import defaultdict
from html import escape

NAMES = {
    "a": "upstream (nginx)", "b": "sidegate public", "c": "sidegate session",
    "d": "sidegate redirect", "e": "sidegate auth check", "f": "Apache proxy",
    "g": "Apache + mod_auth_openidc", "h": "Apache + mod_auth_mellon",
    "i": "sidegate Redis session", "j": "sidegate bearer JWT",
    "k": "nginx as a plain proxy",
}
LINE_COLORS = ["#718096", "#2b6cb0", "#2f855a", "#805ad5", "#c05621", "#b7791f", "#d53f8c"]
COLORS = {"sidegate": "#2b6cb0", "Apache": "#c05621", "upstream": "#718096"}


def color(label):
    for k, c in COLORS.items():
        if label.startswith(k):
            return c
    return "#4a5568"


def load(path):
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    by = defaultdict(list)
    for r in rows:
        by[(r["scenario"], r.get("conns", ""))].append(r)
    return rows, by


def bars(svg, x0, y0, w, title, items, unit):
    """items: (label, median, lo, hi); horizontal bars scaled to the largest hi."""
    top = max(hi for _, _, _, hi in items) or 1
    svg.append(f'<text x="{x0}" y="{y0}" font-weight="bold">{escape(title)}</text>')
    y = y0 + 12
    for label, med, lo, hi in items:
        bw = w * med / top
        svg.append(f'<text x="{x0}" y="{y + 13}" font-size="12">{escape(label)}</text>')
        bx = x0 + 190
        svg.append(f'<rect x="{bx}" y="{y}" width="{bw:.1f}" height="16" fill="{color(label)}"/>')
        lx, hx = bx + w * lo / top, bx + w * hi / top
        svg.append(f'<line x1="{lx:.1f}" x2="{hx:.1f}" y1="{y + 8}" y2="{y + 8}" stroke="#000"/>')
        svg.append(f'<text x="{bx + max(bw, hx - bx) + 6:.1f}" y="{y + 13}" font-size="12">{med:,.{1 if unit == "ms" else 0}f} {unit}</text>')
        y += 22
    return y + 20


def lines(svg, x0, y0, levels, by):
    """p99 against connections: one line per scenario measured at every level, both axes
    logarithmic (levels evenly spaced, p99 in decades of ms)."""
    import math
    series = []
    for sc in sorted({s for s, _ in by}):
        if all((sc, c) in by for c in levels):
            pts = [statistics.median(float(r["p99_us"]) / 1000 for r in by[(sc, c)]) for c in levels]
            series.append((NAMES.get(sc.split("-")[0], sc), pts))
    if not series:
        return y0
    svg.append(f'<text x="{x0}" y="{y0}" font-weight="bold">p99 latency (ms, log scale) against connections</text>')
    lo = 10 ** math.floor(math.log10(min(min(p) for _, p in series)))
    hi = 10 ** math.ceil(math.log10(max(max(p) for _, p in series)))
    px, py, w, h = x0 + 50, y0 + 20, 420, 220
    ys = lambda v: py + h - h * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    xs = lambda i: px + w * i / max(len(levels) - 1, 1)
    svg.append(f'<rect x="{px}" y="{py}" width="{w}" height="{h}" fill="none" stroke="#a0aec0"/>')
    d = lo
    while d <= hi:
        svg.append(f'<line x1="{px}" x2="{px + w}" y1="{ys(d):.1f}" y2="{ys(d):.1f}" stroke="#e2e8f0"/>')
        svg.append(f'<text x="{px - 6}" y="{ys(d) + 4:.1f}" font-size="11" text-anchor="end">{d:g}</text>')
        d *= 10
    for i, c in enumerate(levels):
        svg.append(f'<text x="{xs(i):.1f}" y="{py + h + 16}" font-size="11" text-anchor="middle">{escape(c)}</text>')
    for k, (label, pts) in enumerate(series):
        col = LINE_COLORS[k % len(LINE_COLORS)]
        path = " ".join(f"{xs(i):.1f},{ys(v):.1f}" for i, v in enumerate(pts))
        svg.append(f'<polyline points="{path}" fill="none" stroke="{col}" stroke-width="2"/>')
        ly = py + 14 + 18 * k
        svg.append(f'<line x1="{px + w + 16}" x2="{px + w + 36}" y1="{ly - 4}" y2="{ly - 4}" stroke="{col}" stroke-width="2"/>')
        svg.append(f'<text x="{px + w + 42}" y="{ly}" font-size="12">{escape(label)}</text>')
    return py + h + 40


def main(src, dst):
    rows, by = load(src)
    levels = sorted({r.get("conns", "") for r in rows}, key=lambda c: int(c) if c.isdigit() else 0)
    base = "64" if "64" in levels else (levels[len(levels) // 2] if levels else "")
    rps, p99 = [], []
    for (sc, conns), rs in sorted(by.items()):
        if conns != base:
            continue
        label = NAMES.get(sc.split("-")[0], sc)
        v = [float(r["rps"]) for r in rs]
        rps.append((label, statistics.median(v), min(v), max(v)))
        l = [float(r["p99_us"]) / 1000 for r in rs]
        p99.append((label, statistics.median(l), min(l), max(l)))
    svg = []
    y = bars(svg, 20, 30, 420, f"requests/s (median, min-max over rounds){' at ' + base + ' connections' if base else ''}", rps, "req/s")
    y = bars(svg, 20, y, 420, "p99 latency, ms", p99, "ms")
    if len(levels) > 1:
        y = lines(svg, 20, y, levels, by)
    out = (f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{y + 20}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="#fff"/>' + "".join(svg) + "</svg>\n")
    open(dst, "w").write(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
