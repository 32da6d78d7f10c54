#!/usr/bin/env python3
"""Summary of a kernel scheduler trace of one bench load (not a test): per thread group, how
long each stretch on a CPU lasted and how long a woken thread waited for one. bench.sh
records 1 s of `perf sched record` in the middle of each measured load when TRACE=1 and
runs this on `perf sched timehist`'s output.

    perf sched timehist -i FILE.perf.data | bench/schedtrace.py

A run of 4 ms or more is a thread that kept its CPU for a whole clock tick (HZ=250 here)
while others were waiting: when two of sidegate's connection threads share one CPU they take
turns in such runs, and the connections of the one waiting wait with it (BENCHMARKS.md).
"""
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*\d+\.\d+\s+\[\d+\]\s+(.+?)\[\d+(?:/\d+)?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")


def quantile(xs, q):
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def main():
    runs, delays = defaultdict(list), defaultdict(list)
    for line in sys.stdin:
        m = LINE.match(line)
        if not m or m.group(1).startswith("<idle"):
            continue
        group = re.sub(r"\d+$", "N", m.group(1).strip())
        delays[group].append(float(m.group(3)))
        runs[group].append(float(m.group(4)))
    print("group                 slices  run p50  run p99  run max  runs>=2ms  runs>=4ms  time in runs>=2ms"
          "  delay p99  delay max  (ms)")
    for group in sorted(runs, key=lambda g: -len(runs[g])):
        r, d = sorted(runs[group]), sorted(delays[group])
        if len(r) < 20:
            continue
        long_time = sum(x for x in r if x >= 2)
        print(f"{group[:20]:20} {len(r):7} {quantile(r, .5):8.3f} {quantile(r, .99):8.3f} {r[-1]:8.3f}"
              f" {sum(x >= 2 for x in r):10} {sum(x >= 4 for x in r):10} {100 * long_time / max(sum(r), 1e-9):17.0f}%"
              f" {quantile(d, .99):10.3f} {d[-1]:10.3f}")


if __name__ == "__main__":
    main()
