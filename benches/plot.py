#!/usr/bin/env python3
"""Stdlib-only SVG line plot for the Patronus benchmarks.

Usage:
  benches/plot.py --out F.svg --title T --xlabel X --ylabel Y [--logx] [--logy] DATA.tsv

DATA.tsv: a header row `x<TAB>series1<TAB>series2...`, then numeric rows. An empty
cell (or one that is not a number) means "no point" for that series at that x.
Each series is drawn as a polyline with markers; a legend names the series.
"""

import argparse
import math
import sys
from xml.sax.saxutils import escape

W, H = 780, 420
LEFT, RIGHT, TOP, BOTTOM = 78, 210, 40, 58
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def parse(path):
    with open(path, encoding="utf-8") as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    if not lines:
        sys.exit(f"plot.py: {path} is empty")
    header = lines[0].split("\t")
    if len(header) < 2:
        sys.exit(f"plot.py: {path}: header needs x and at least one series")
    names = header[1:]
    series = {n: [] for n in names}
    for lineno, ln in enumerate(lines[1:], start=2):
        cells = ln.split("\t")
        try:
            x = float(cells[0])
        except ValueError:
            sys.exit(f"plot.py: {path}:{lineno}: x value {cells[0]!r} is not a number")
        for i, n in enumerate(names, start=1):
            if i < len(cells) and cells[i].strip():
                try:
                    y = float(cells[i])
                except ValueError:
                    continue
                if math.isfinite(y):
                    series[n].append((x, y))
    return names, series


def nice_step(span, target=6):
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt(v):
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e6 and float(v / 1e6).is_integer():
        return f"{v / 1e6:g}M"
    if a >= 1e3 and float(v / 1e3).is_integer():
        return f"{v / 1e3:g}k"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:g}"


class Axis:
    def __init__(self, lo, hi, log, include_zero):
        self.log = log
        if log:
            lo = max(lo, 1e-12)
            hi = max(hi, lo)
            self.lo = 10 ** math.floor(math.log10(lo))
            self.hi = 10 ** math.ceil(math.log10(hi))
            if self.hi == self.lo:
                self.hi = self.lo * 10
        else:
            if include_zero:
                lo = min(lo, 0.0)
            if hi == lo:
                hi = lo + 1.0
            step = nice_step(hi - lo)
            self.lo = math.floor(lo / step) * step
            self.hi = math.ceil(hi / step) * step
            self.step = step

    def frac(self, v):
        if self.log:
            v = max(v, 1e-12)
            return (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (v - self.lo) / (self.hi - self.lo)

    def ticks(self):
        if self.log:
            out, e = [], math.log10(self.lo)
            while e <= math.log10(self.hi) + 1e-9:
                out.append(10 ** e)
                e += 1
            return out
        out, v = [], self.lo
        while v <= self.hi + self.step * 1e-6:
            out.append(round(v, 10))
            v += self.step
        return out


def main():
    ap = argparse.ArgumentParser(description="stdlib-only SVG line plot")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    ap.add_argument("--xlabel", default="")
    ap.add_argument("--ylabel", default="")
    ap.add_argument("--logx", action="store_true")
    ap.add_argument("--logy", action="store_true")
    ap.add_argument("data")
    a = ap.parse_args()

    names, series = parse(a.data)
    pts = [p for n in names for p in series[n]]
    if a.logx:
        pts = [p for p in pts if p[0] > 0]
    if a.logy:
        pts = [p for p in pts if p[1] > 0]
    if not pts:
        sys.exit(f"plot.py: {a.data} has no plottable points")
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    xa = Axis(min(xs), max(xs), a.logx, include_zero=False)
    ya = Axis(min(ys), max(ys), a.logy, include_zero=True)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x):
        return LEFT + xa.frac(x) * pw

    def py(y):
        return TOP + (1 - ya.frac(y)) * ph

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{LEFT + pw / 2:.1f}" y="22" text-anchor="middle" font-size="15" '
         f'font-weight="bold">{escape(a.title)}</text>']
    for t in xa.ticks():
        x = px(t)
        o.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}" stroke="#e4e4e4"/>')
        o.append(f'<text x="{x:.1f}" y="{TOP + ph + 16}" text-anchor="middle">{fmt(t)}</text>')
    for t in ya.ticks():
        y = py(t)
        o.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        o.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
    o.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    o.append(f'<text x="{LEFT + pw / 2:.1f}" y="{H - 14}" text-anchor="middle">{escape(a.xlabel)}</text>')
    o.append(f'<text x="18" y="{TOP + ph / 2:.1f}" text-anchor="middle" '
             f'transform="rotate(-90 18 {TOP + ph / 2:.1f})">{escape(a.ylabel)}</text>')
    for i, n in enumerate(names):
        c = COLORS[i % len(COLORS)]
        sp = sorted(p for p in series[n]
                    if (not a.logx or p[0] > 0) and (not a.logy or p[1] > 0))
        if sp:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sp)
            o.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
            for x, y in sp:
                o.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"/>')
        ly = TOP + 10 + i * 18
        lx = LEFT + pw + 12
        o.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 18}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        o.append(f'<text x="{lx + 24}" y="{ly + 4}">{escape(n)}</text>')
    o.append("</svg>")
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(o) + "\n")


if __name__ == "__main__":
    main()
