#!/usr/bin/env bash
# Latency against concurrency (not a test): bench/bench.sh once per connection count, the
# results merged with a `conns` column, then bench/plot.py draws them (p99 per level).
# Every run is bench.sh's own: loopback only, bounded, everything stopped on exit.
#
#   bench/sweep.sh                                   16 64 256 1024 connections
#   LEVELS="64 256" SCENARIOS="b c" bench/sweep.sh
#   SKIP_BUILD=1 DURATION=5 bench/sweep.sh
# Output: .run/bench/sweep-<timestamp>/ (results.tsv with conns, results.svg, one dir per level)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LEVELS="${LEVELS:-16 64 256 1024}"
export SCENARIOS="${SCENARIOS:-a b c e g}"
export RUNS="${RUNS:-1}" DURATION="${DURATION:-5}" LOGINS="${LOGINS:-0}"
OUT="$ROOT/.run/bench/sweep-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
log() { printf '[sweep %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
latest_run() { find "$ROOT/.run/bench" -mindepth 1 -maxdepth 1 -type d -name '2*' | sort | tail -1; }
first=1
for c in $LEVELS; do
  if ! [[ $c =~ ^[0-9]+$ ]] || ((c < 1 || c > 1024)); then log "ERROR: level $c is not 1..1024"; exit 1; fi
  log "=== $c connections"
  before=$(latest_run)
  # The first level builds (unless SKIP_BUILD); the others reuse that binary.
  if ((first)); then CONNS=$c bash "$ROOT/bench/bench.sh" >"$OUT/bench-$c.log" 2>&1
  else SKIP_BUILD=1 CONNS=$c bash "$ROOT/bench/bench.sh" >"$OUT/bench-$c.log" 2>&1; fi \
    || { log "ERROR: bench.sh with $c connections failed: $(tail -3 "$OUT/bench-$c.log")"; exit 1; }
  first=0
  run=$(latest_run)
  [[ $run != "$before" ]] || { log "ERROR: no new run directory for $c connections"; exit 1; }
  mv "$run" "$OUT/c$c"
  if [[ ! -e $OUT/results.tsv ]]; then
    head -1 "$OUT/c$c/results.tsv" | sed 's/$/\tconns/' >"$OUT/results.tsv"
  fi
  tail -n +2 "$OUT/c$c/results.tsv" | sed "s/\$/\t$c/" >>"$OUT/results.tsv"
done
python3 "$ROOT/bench/plot.py" "$OUT/results.tsv" "$OUT/results.svg"
log "p99 (ms) by connections:"
python3 - "$OUT/results.tsv" <<'PY' | tee "$OUT/summary.txt"
import csv, sys, statistics
from collections import defaultdict
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
levels = sorted({int(r["conns"]) for r in rows})
by = defaultdict(list)
for r in rows:
    by[(r["scenario"], int(r["conns"]))].append(r)
print("scenario".ljust(16) + "".join(f"{c:>18}" for c in levels))
for sc in sorted({r["scenario"] for r in rows}):
    cells = []
    for c in levels:
        rs = by.get((sc, c), [])
        if rs:
            rps = statistics.median(float(r["rps"]) for r in rs)
            p99 = statistics.median(float(r["p99_us"]) for r in rs) / 1000
            cells.append(f"{rps/1000:6.1f}k {p99:7.1f} ms")
        else:
            cells.append("-")
    print(sc.ljust(16) + "".join(f"{x:>18}" for x in cells))
PY
log "results: $OUT (results.tsv, results.svg, summary.txt)"
