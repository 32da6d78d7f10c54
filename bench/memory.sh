#!/usr/bin/env bash
# sidegate memory figures (not a test). Loopback only; every login loop and load is bounded
# in count and time; everything it starts is stopped on exit.
#
# For each session mode (MODES: cookie, memory) and each session count (COUNTS), on free
# 127.0.0.1 ports: an nginx upstream (bench/nginx.conf.in) and a fresh target/release/sidegate
# whose only provider is a local account (bcrypt cost 4, so a sign-in costs ~1 ms and 100k
# distinct sessions take a minute or two, not hours of IdP logins). Records its VmRSS:
#   idle      after start-up and one request (/readyz answered; nothing else yet)
#   minted    after COUNT sign-ins, each a distinct session (new id, own cookie), by
#             WORKERS parallel clients
#   load peak the highest sample (every 0.5 s) during wrk -c$CONNS for DURATION s (at least
#             1 s per 4000 sessions) where every request carries the next session's cookie
#             (bench/wrk-cookies.lua): every session is used, its assertion signed and
#             cached ("requests per session" shows it: 2 or more covers them all)
#   after     2 s after the load
# Checks that every response under load was the app's 200 (errors and non-2xx fail the run).
#
#   bench/memory.sh
#   COUNTS="10000" MODES="cookie" bench/memory.sh
#   SKIP_BUILD=1 DURATION=20 bench/memory.sh
# Output: .run/memory/<timestamp>/ (results.md, results.tsv, per-run logs)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/bench"
cd "$ROOT"
COUNTS="${COUNTS:-10000 100000}"
MODES="${MODES:-cookie memory}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-64}"
WORKERS="${WORKERS:-4}"
log() { printf '[memory %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib.sh
source "$ROOT/bench/lib.sh"
for v in DURATION CONNS WORKERS; do [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number"; done
((DURATION >= 1 && DURATION <= 120)) || die "DURATION must be 1..120 s"
((CONNS >= 1 && CONNS <= 1024)) || die "CONNS must be 1..1024"
((WORKERS >= 1 && WORKERS <= 16)) || die "WORKERS must be 1..16"
for c in $COUNTS; do
  if ! [[ $c =~ ^[0-9]+$ ]] || ((c < 1 || c > 200000)); then die "COUNTS: $c is not 1..200000"; fi
done
for m in $MODES; do [[ $m == cookie || $m == memory ]] || die "MODES: $m is not cookie or memory"; done
raise_nofile "$CONNS"

apt_ensure wrk nginx-light curl apache2-utils   # htpasswd makes the bcrypt hash
release_binary

OUT="$ROOT/.run/memory/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
PIDS=()          # "pid name", stopped in reverse on exit
SAMPLER_PID=
cleanup() {
  set +e
  [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    # shellcheck disable=SC2086  # "pid name"
    stop_pid ${PIDS[i]}
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- upstream: nginx (one worker) ---------------------------------------------------
UPSTREAM_PORT=$(free_port)
# shellcheck disable=SC2034  # read by sidegate_config (bench/lib.sh)
UP="http://127.0.0.1:$UPSTREAM_PORT"
mkdir -p "$OUT/nginx/www/public" "$OUT/nginx/tmp"
printf 'hello from upstream\n' >"$OUT/nginx/www/index.txt"
sed -e "s|@RUN@|$OUT/nginx|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@NGINX_WORKERS@|1|g" \
  "$HERE/nginx.conf.in" >"$OUT/nginx/nginx.conf"
/usr/sbin/nginx -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx" </dev/null >"$OUT/nginx/stdout.log" 2>&1 &
PIDS+=("$! nginx")
wait_port "$UPSTREAM_PORT" 10 || die "nginx did not come up"

# ---- the local account --------------------------------------------------------------
local_account "$OUT/users.toml"

printf 'mode\tsessions\tidle_kb\tminted_kb\tload_peak_kb\tafter_kb\tlogins_s\trequests\trps\tp99_us\terrors\n' >"$OUT/results.tsv"
for mode in $MODES; do
  for count in $COUNTS; do
    tag="$mode-$count" dir="$OUT/$mode-$count"
    port=$(free_port) admin=$(free_port)
    store=''
    [[ $mode == memory ]] && store='store = "memory"'
    sidegate_config "$dir" "$port" "$admin" "[local]
users_file = \"$OUT/users.toml\"" "$store"
    "$SIDEGATE" run --config "$dir/sidegate.toml" </dev/null >"$dir/stdout.log" 2>"$dir/stderr.log" &
    pid=$!
    PIDS+=("$pid sidegate-$tag")
    wait_port "$port" 20 || { tail -20 "$dir/stderr.log" >&2; die "$tag: sidegate did not start"; }
    ok=0
    for ((i = 0; i < 40; i++)); do
      [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz") == 200 ]] && { ok=1; break; }
      sleep 0.25
    done
    ((ok)) || die "$tag: /readyz did not answer 200"
    sleep 2
    idle=$(rss_kb "$pid")
    log "$tag: idle RSS $((idle / 1024)) MiB; $count sign-ins by $WORKERS clients"
    t0=$(date +%s.%N)
    timeout -k 5 900 python3 "$HERE/local-signin.py" "http://127.0.0.1:$port" "$count" "$WORKERS" \
      "$dir/cookies.txt" || die "$tag: the sign-ins failed"
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    minted=$(rss_kb "$pid")
    # long enough for every session to be used at ~10k req/s (each wrk thread walks the list
    # from its own offset): a shorter load measures fewer sessions than the row says
    load_s=$((count / 4000 > DURATION ? count / 4000 : DURATION))
    log "$tag: $count sessions in ${secs%.*} s; RSS $((minted / 1024)) MiB; load for ${load_s}s"
    ( for ((i = 0; i < (load_s + 10) * 2; i++)); do rss_kb "$pid"; sleep 0.5; done ) >"$dir/rss.txt" &
    SAMPLER_PID=$!
    timeout -k 5 $((load_s + 60)) wrk -t2 -c"$CONNS" -d"${load_s}s" --timeout 10s \
      -s "$HERE/wrk-cookies.lua" "http://127.0.0.1:$port/" -- "$dir/cookies.txt" >"$dir/wrk.txt" 2>&1 \
      || { kill "$SAMPLER_PID"; die "$tag: wrk failed: $(tail -3 "$dir/wrk.txt")"; }
    kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=
    sleep 2
    after=$(rss_kb "$pid")
    peak=$(sort -n "$dir/rss.txt" | tail -1)
    stats=$(grep '^STATS ' "$dir/wrk.txt") || die "$tag: no STATS line from wrk"
    python3 - "$OUT/results.tsv" "$mode" "$count" "$idle" "$minted" "$peak" "$after" "$secs" "$stats" <<'PY'
import sys
out, mode, count, idle, minted, peak, after, secs, stats = sys.argv[1:]
kv = dict(x.split("=", 1) for x in stats.split()[1:])
errors = sum(int(kv[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout", "err_status"))
row = [mode, count, idle, minted, peak, after, f"{float(secs):.0f}", kv["requests"], kv["rps"], kv["p99_us"], errors]
open(out, "a").write("\t".join(map(str, row)) + "\n")
print(f"  -> {mode} {count}: idle {int(idle)/1024:.1f} MiB, minted {int(minted)/1024:.1f}, peak {int(peak)/1024:.1f}, "
      f"after {int(after)/1024:.1f} MiB; {kv['requests']} requests, {float(kv['rps']):.0f}/s, errors {errors}", file=sys.stderr)
if errors:
    sys.exit(f"{mode} {count}: {errors} errors or non-2xx responses under load")
PY
    stop_pid "$pid" "sidegate-$tag"
  done
done
{
  echo "# sidegate memory $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc=$(nproc) kernel=$(uname -r); sidegate git $(git rev-parse --short HEAD 2>/dev/null || echo none)"
  echo "wrk -t2 -c$CONNS for ${DURATION}s (at least 1 s per 4000 sessions), every request the next session's cookie; VmRSS of sidegate"
  echo
  python3 - "$OUT/results.tsv" <<'PY'
import csv, sys
print("| mode | sessions | idle MiB | after sign-ins MiB | peak under load MiB | after load MiB | sign-ins s | req/s | requests per session |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    mib = lambda k: f"{int(r[k]) / 1024:.1f}"
    print(f"| {r['mode']} | {r['sessions']} | {mib('idle_kb')} | {mib('minted_kb')} | {mib('load_peak_kb')} | "
          f"{mib('after_kb')} | {r['logins_s']} | {float(r['rps']):.0f} | {int(r['requests']) / int(r['sessions']):.1f} |")
PY
} >"$OUT/results.md"
cat "$OUT/results.md"
log "results: $OUT/results.md"
