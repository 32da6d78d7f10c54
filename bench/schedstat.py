#!/usr/bin/env python3
"""How the kernel scheduled the processes of a bench round (not a test): for each named
group, the CPU it used, its time slices per second, the average run and run-queue wait per
slice, and the share of involuntary context switches (preempted, as against blocking).
BENCHMARKS.md reads the p99 tail from these. Reads /proc only (schedstat and status of
every thread), twice: after START seconds and FOR seconds later.

    bench/schedstat.py START FOR NAME=PID... NAME=comm:COMM...

NAME=PID counts that process and its descendants (Apache's children, nginx's workers);
NAME=comm:COMM every process whose command name is COMM (wrk). bench.sh runs it during
each measured load when SCHED=1.
"""
import os
import re
import sys
import time


def children(pid):
    """Direct children of pid, from every thread's children list."""
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                out += open(f"/proc/{pid}/task/{t}/children").read().split()
            except OSError:
                pass
    except OSError:
        pass
    return out


def processes(spec):
    """The pids a NAME=... spec names now."""
    if spec.startswith("comm:"):
        comm = spec[len("comm:"):]
        found = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    if open(f"/proc/{p}/comm").read().strip() == comm:
                        found.append(p)
                except OSError:
                    pass
        return found
    todo, seen = [spec], []
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo += children(p)
    return seen


def snapshot(groups):
    """{(name, tid): (run_ns, wait_ns, slices, voluntary, involuntary)}"""
    snap = {}
    for name, spec in groups:
        for pid in processes(spec):
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    run, wait, slices = map(int, open(f"/proc/{pid}/task/{tid}/schedstat").read().split())
                    status = open(f"/proc/{pid}/task/{tid}/status").read()
                except (OSError, ValueError):
                    continue
                vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
                invol = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
                snap[(name, tid)] = (run, wait, slices, vol, invol)
    return snap


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    start, span = float(sys.argv[1]), float(sys.argv[2])
    groups = [tuple(a.split("=", 1)) for a in sys.argv[3:]]
    time.sleep(start)
    before = snapshot(groups)
    time.sleep(span)
    after = snapshot(groups)
    totals = {name: [0, 0, 0, 0, 0, 0] for name, _ in groups}
    for key, now in after.items():
        then = before.get(key)
        if then is None:
            continue
        d = [a - b for a, b in zip(now, then)]
        if d[0] < 0.01 * span * 1e9:  # threads that hardly ran (idle pool threads)
            continue
        t = totals[key[0]]
        for i in range(5):
            t[i] += d[i]
        t[5] += 1
    print(f"# {span:.0f} s from t = {start:.0f} s; threads that ran at least 1 % of it")
    print("group\tthreads\tcpu\tslices_per_s\trun_us_per_slice\twait_us_per_slice\tinvoluntary_pct")
    for name, _ in groups:
        run, wait, slices, vol, invol, n = totals[name]
        if n == 0:
            continue
        print(f"{name}\t{n}\t{run / 1e9 / span:.2f}\t{slices / span:.0f}\t{run / slices / 1e3:.1f}"
              f"\t{wait / slices / 1e3:.1f}\t{100 * invol / max(vol + invol, 1):.0f}")


if __name__ == "__main__":
    main()
