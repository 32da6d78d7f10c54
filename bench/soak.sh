#!/usr/bin/env bash
# sidegate soak (not a test). Loopback only; every load is bounded in count and
# time (wrk -d, a hard `timeout`, LOGINS_MAX) and stops by itself; everything it
# starts is stopped on exit.
#
# Starts, on free 127.0.0.1 ports, the same services as bench/bench.sh: an nginx
# upstream (bench/nginx.conf.in), the test OP (tests/idp/provider.mjs) and
# target/release/sidegate; logs in as alice with bench/login.py, warms up for
# 5 s with wrk at low concurrency and records the baseline of sidegate's VmRSS,
# open fds and live tokio tasks (admin /metrics: sidegate_tasks). Then, at once:
#   - wrk -t$THREADS -c$CONNS -d${DURATION}s --timeout 10s --latency with alice's
#     session cookie on the protected path / (bench scenario c, 200);
#   - full OIDC logins (bench/login.py's flow) back to back, at most LOGINS_MAX,
#     none started after DURATION s;
#   - a sample of RSS, fds, tasks (and connections) every 5 s.
# After the load it waits up to SETTLE s (polling every 1 s) for fds and tasks to
# come back within 2 of the baseline, then prints a summary and PASS/FAIL for:
#   errors == 0 (wrk socket errors + non-2xx + login failures), the responses are
#   the 200 page (bytes/response as the probe's), RSS growth < 10 % (the highest
#   sample of the load's last third vs the highest of its middle third), fds back
#   to baseline, tasks back to baseline. Exit 0 only if every check passes.
# Each client connection has its own upstream connection (a lane), closed with it,
# up to upstream.max_idle_connections (1024); the pool serves any past that and
# keeps idle connections to nginx (a socket and a task each) until its 60 s idle
# timeout: the default SETTLE=90 waits them out, so "back to baseline" means
# nothing was leaked, not merely nothing is in use.
# samples.tsv tells client sockets (conns_in) from upstream ones (conns_up).
#
#   bench/soak.sh                                 1000 connections for 60 s
#   CONNS=200 DURATION=10 LOGINS_MAX=20 bench/soak.sh
#   THREADS=4 SETTLE=120 bench/soak.sh
#   SKIP_BUILD=1 bench/soak.sh                    use the existing target/release/sidegate
#   SIDEGATE_BIN=/path/to/sidegate bench/soak.sh  soak that binary (no build)
# Needs an open-files limit of about 3 x CONNS: it raises its own (65536, or the
# hard limit when that is lower but enough); wrk and the services inherit it.
# Output: .run/soak/<timestamp>/ (summary.txt, samples.tsv, logins.tsv, wrk.txt,
# service logs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/bench"
cd "$ROOT"

CONNS="${CONNS:-1000}"
DURATION="${DURATION:-60}"      # seconds of load
THREADS="${THREADS:-2}"
LOGINS_MAX="${LOGINS_MAX:-300}" # full login flows during the load (0 = none)
SETTLE="${SETTLE:-90}"          # seconds to wait for fds/tasks to come back after the load
WARMUP=5                        # seconds, low concurrency, before the baseline
WARMUP_CONNS=8
SAMPLE_EVERY=5                  # seconds between samples under load
TOLERANCE=2                     # fds and tasks may end this much above the baseline
RSS_GROWTH_MAX_PCT=10

log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib.sh
source "$ROOT/bench/lib.sh"
isint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in CONNS DURATION THREADS LOGINS_MAX SETTLE; do
  isint "${!v}" || die "$v must be a non-negative integer, got '${!v}'"
done
((CONNS >= 1 && CONNS <= 5000)) || die "CONNS must be 1..5000"
((DURATION >= 5 && DURATION <= 600)) || die "DURATION must be 5..600 s"
((THREADS >= 1 && THREADS <= 16 && THREADS <= CONNS)) || die "THREADS must be 1..16 and <= CONNS"
((LOGINS_MAX <= 10000)) || die "LOGINS_MAX must be 0..10000"
((SETTLE >= 1 && SETTLE <= 300)) || die "SETTLE must be 1..300 s"

# ---- open-files limit (wrk, nginx and sidegate inherit it) ------------------------
raise_nofile "$CONNS"
NOFILE=$(ulimit -n)

# ---- tools (as bench/bench.sh) ------------------------------------------------------
apt_ensure wrk nginx-light curl ca-certificates iproute2
op_tools

release_binary

# ---- run directory, ports ---------------------------------------------------------
OUT="$ROOT/.run/soak/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
CLK_TCK=$(getconf CLK_TCK)

# three distinct free ports, chosen while all three sockets are held
read -r UPSTREAM_PORT SG_PORT SG_ADMIN_PORT < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))
for s in ss: s.close()')
[[ -n ${SG_ADMIN_PORT:-} ]] || die "could not pick free ports"
SG="http://127.0.0.1:$SG_PORT"
UP="http://127.0.0.1:$UPSTREAM_PORT"
METRICS="http://127.0.0.1:$SG_ADMIN_PORT/metrics"


# ---- stopping what we start (by pid) ----------------------------------------------
NGINX_PID='' OP_PID='' SG_PID='' SAMPLER_PID='' OP_IN='' WRK_PID='' LOGINS_PID=''
cleanup() {
  set +e
  [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null
  # `timeout` passes TERM on to wrk and to the login loop
  stop_pid "$WRK_PID" wrk
  stop_pid "$LOGINS_PID" login-loop
  stop_pid "$SG_PID" sidegate
  # closing the OP's stdin ends it by itself; TERM in case it did not
  [[ -n $OP_IN ]] && exec {OP_IN}>&-
  stop_pid "$OP_PID" oidc-provider
  stop_pid "$NGINX_PID" nginx
  [[ -n $NGINX_PID$OP_PID$SG_PID ]] && log "stopped the services this soak started"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- upstream: nginx ------------------------------------------------------------
# The template's worker_connections (4096) is raised in this copy so that one
# worker takes an upstream connection per client connection.
NGINX_WORKER_CONNS=$((CONNS * 2 + 1024))
((NGINX_WORKER_CONNS >= 4096)) || NGINX_WORKER_CONNS=4096
RUN="$OUT/nginx"
mkdir -p "$RUN/www/public" "$RUN/tmp"
printf 'hello from upstream\n' >"$RUN/www/index.txt"
printf 'hello from upstream\n' >"$RUN/www/public/index.txt"
sed -e "s|@RUN@|$RUN|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@NGINX_WORKERS@|1|g" \
    -e "s|worker_connections [0-9]*;|worker_connections $NGINX_WORKER_CONNS;|" \
  "$HERE/nginx.conf.in" >"$RUN/nginx.conf"
! grep -q '@[A-Z_]*@' "$RUN/nginx.conf" || die "unrendered placeholder in $RUN/nginx.conf"
grep -q "worker_connections $NGINX_WORKER_CONNS;" "$RUN/nginx.conf" \
  || die "could not set worker_connections in $RUN/nginx.conf (bench/nginx.conf.in changed?)"
/usr/sbin/nginx -t -q -c "$RUN/nginx.conf" -p "$RUN" 2>"$RUN/configtest.log" \
  || { cat "$RUN/configtest.log" >&2; die "nginx config test failed"; }
/usr/sbin/nginx -c "$RUN/nginx.conf" -p "$RUN" </dev/null >"$RUN/stdout.log" 2>&1 &
NGINX_PID=$!
wait_port "$UPSTREAM_PORT" 10 || { cat "$RUN/error.log" >&2; die "nginx did not come up"; }
log "upstream nginx: pid $NGINX_PID on $UP (worker_connections $NGINX_WORKER_CONNS)"

# ---- the test OP ------------------------------------------------------------------
# Its stdin is a FIFO whose only writer is this shell: if the soak dies in
# any way, the OP sees EOF and exits by itself.
mkfifo "$OUT/op.stdin"
exec {OP_IN}<>"$OUT/op.stdin"
OP_REDIRECT_URIS="$SG/.sidegate/oidc/callback" OP_PORT=0 \
  node "$ROOT/tests/idp/provider.mjs" <"$OUT/op.stdin" {OP_IN}>&- >"$OUT/op.stdout" 2>"$OUT/op.stderr" &
OP_PID=$!
wait_op_ready "$OP_PID"

# ---- sidegate (the configuration of bench/bench.sh) -------------------------------
SGRUN="$OUT/sidegate"
sidegate_config "$SGRUN" "$SG_PORT" "$SG_ADMIN_PORT" "$(oidc_toml "$SGRUN")"
"$SIDEGATE" run --config "$SGRUN/sidegate.toml" </dev/null {OP_IN}>&- >"$SGRUN/stdout.log" 2>"$SGRUN/stderr.log" &
SG_PID=$!
wait_port "$SG_PORT" 20 || { tail -20 "$SGRUN/stderr.log" >&2; die "sidegate did not listen on $SG_PORT"; }
ready=0
for ((i = 0; i < 60; i++)); do   # 30 s
  [[ $(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:$SG_ADMIN_PORT/readyz") == 200 ]] && { ready=1; break; }
  proc_alive "$SG_PID" || { tail -20 "$SGRUN/stderr.log" >&2; die "sidegate exited"; }
  sleep 0.5
done
((ready)) || log "WARNING: sidegate's /readyz did not answer 200 in 30 s; going on, the probes will tell"
SG_NOFILE=$(awk '/^Max open files/{print $4}' "/proc/$SG_PID/limits")
log "sidegate: pid $SG_PID on $SG (admin 127.0.0.1:$SG_ADMIN_PORT), open-files limit $SG_NOFILE"

# ---- measurement helpers ----------------------------------------------------------
group_pids() { echo "$1"; pgrep -P "$1" || true; }
drain() {        # wait (<= 20 s) until PID is idle
  local t0 t1 i
  for ((i = 0; i < 40; i++)); do
    t0=$(group_ticks "$1"); sleep 0.5; t1=$(group_ticks "$1")
    (( t1 - t0 <= CLK_TCK / 20 )) && return 0     # <= 10% of one core
  done
  log "WARNING: pid $1 still busy after 20 s"
}
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo NA; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
gauge() {        # METRICS_TEXT NAME: the value of an unlabelled gauge, or NA
  awk -v n="$2" '$1 == n {print $2; f = 1} END {if (!f) print "NA"}' <<<"$1"
}
conns() {        # ss filter: established TCP sockets matching it
  ss -Htn state established "$1" 2>/dev/null | wc -l
}
# One sample, tab-separated: phase t_s rss_kb fds tasks tunnels conns_in conns_up
# (conns_in: sidegate's accepted client sockets; conns_up: its sockets to nginx).
sample() {       # PHASE T0_EPOCH_SECONDS
  local m t
  t=$(( $(date +%s) - $2 ))   # when the sample starts; /metrics may be slow under load
  m=$(curl -s --max-time 5 "$METRICS" 2>/dev/null || true)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$t" "$(rss_kb "$SG_PID")" "$(fd_count "$SG_PID")" \
    "$(gauge "$m" sidegate_tasks)" "$(gauge "$m" sidegate_websocket_tunnels)" \
    "$(conns "( sport = :$SG_PORT )")" "$(conns "( dport = :$UPSTREAM_PORT )")"
}
field() { cut -f"$2" <<<"$1"; }   # SAMPLE_LINE COLUMN

BROWSER_HDR=(-H "Accept: text/html,application/xhtml+xml,*/*;q=0.8" -H "User-Agent: sidegate-soak/1.0")

{
  echo "# sidegate soak $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "wrk -t$THREADS -c$CONNS -d${DURATION}s --timeout 10s --latency, protected path with a session cookie;" \
       "logins <= $LOGINS_MAX; samples every ${SAMPLE_EVERY}s; settle <= ${SETTLE}s"
  echo "nproc=$(nproc) kernel=$(uname -r) loadavg=$(cut -d' ' -f1-3 /proc/loadavg) nofile=$NOFILE"
  echo "sidegate: $SIDEGATE $("$SIDEGATE" --version 2>/dev/null | head -1 || echo unknown) git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
  echo "nginx-light $(dpkg-query -W -f='${Version}' nginx-light 2>/dev/null) (1 worker), wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null)"
  echo "oidc-provider $(node -p "require('$ROOT/tests/idp/node_modules/oidc-provider/package.json').version"), node $(node --version)"
} >"$OUT/env.txt"

# ---- login, probe, warm-up, baseline ------------------------------------------------
COOKIE=$(timeout -k 5 90 "$PY" "$HERE/login.py" "$SG/" {OP_IN}>&-) || die "login.py failed (see the messages above)"
HDR=("${BROWSER_HDR[@]}" -H "Cookie: $COOKIE")
pr=$(probe "$SG/" "${HDR[@]}"); PROBE_STATUS=${pr% *}; PROBE_BYTES=${pr#* }
[[ $PROBE_STATUS == 200 ]] || die "probe of $SG/ with alice's cookie answered $PROBE_STATUS, expected 200"
m=$(curl -s --max-time 5 "$METRICS") || die "cannot read $METRICS"
[[ $(gauge "$m" sidegate_tasks) != NA ]] \
  || die "$METRICS has no sidegate_tasks gauge: this sidegate binary predates it (rebuild, or set SIDEGATE_BIN)"

log "warm-up: ${WARMUP}s wrk -t1 -c$WARMUP_CONNS on $SG/ (probe 200, $PROBE_BYTES bytes)"
timeout -k 5 $((WARMUP + 15)) wrk -t1 -c"$WARMUP_CONNS" -d"${WARMUP}s" --timeout 10s "${HDR[@]}" "$SG/" \
    >"$OUT/warmup.txt" 2>&1 {OP_IN}>&- \
  || die "warm-up wrk failed: $(tail -3 "$OUT/warmup.txt")"
drain "$SG_PID"
sleep 1
T0=$(date +%s)
printf 'phase\tt_s\trss_kb\tfds\ttasks\ttunnels\tconns_in\tconns_up\n' >"$OUT/samples.tsv"
BASE=$(sample baseline "$T0")
printf '%s\n' "$BASE" >>"$OUT/samples.tsv"
BASE_FDS=$(field "$BASE" 4) BASE_TASKS=$(field "$BASE" 5)
isint "$BASE_TASKS" || die "could not read sidegate_tasks for the baseline"
log "baseline: RSS $(field "$BASE" 3) kB, fds $BASE_FDS, tasks $BASE_TASKS, tunnels $(field "$BASE" 6)," \
    "client conns $(field "$BASE" 7), upstream conns $(field "$BASE" 8)"

# ---- the load: wrk + login loop + sampler ----------------------------------------------
log "load: ${DURATION}s wrk -t$THREADS -c$CONNS on $SG/, logins <= $LOGINS_MAX, a sample every ${SAMPLE_EVERY}s"
T0=$(date +%s)
timeout -k 5 $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 10s --latency \
    -s "$HERE/wrk-stats.lua" "${HDR[@]}" "$SG/" >"$OUT/wrk.txt" 2>&1 </dev/null {OP_IN}>&- &
WRK_PID=$!

# Full logins back to back: none started after DURATION s, at most LOGINS_MAX;
# one line per login in logins.tsv (written as it goes).
printf 'i\tok\tms\terror\n' >"$OUT/logins.tsv"
if ((LOGINS_MAX > 0)); then
  timeout -k 5 $((DURATION + 60)) "$PY" - "$HERE" "$LOGINS_MAX" "$DURATION" "$SG/" "$OUT/logins.tsv" \
      >"$OUT/logins.log" 2>&1 {OP_IN}>&- <<'PY' &
import sys, time
sys.path.insert(0, sys.argv[1])
from login import Flow, LoginError, parse_args
maxn, secs, url, out = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
end = time.monotonic() + secs
with open(out, "a", buffering=1) as f:
    i = 0
    while i < maxn and time.monotonic() < end:
        i += 1
        flow, ok, err = None, 0, ""
        t = time.perf_counter()
        try:
            flow = Flow(parse_args(["--total-timeout", "30", url]))
            flow.run()
            ok = 1
        except LoginError as e:
            err = str(e)
        except Exception as e:  # noqa: BLE001 - every failure counts, whatever it is
            err = f"{type(e).__name__}: {e}"
        finally:
            if flow is not None:
                flow.s.close()
        ms = 1000 * (time.perf_counter() - t)
        f.write(f"{i}\t{ok}\t{ms:.1f}\t{' '.join(err.split())[:300]}\n")
PY
  LOGINS_PID=$!
fi

# Samples every SAMPLE_EVERY s while wrk runs (bounded count); a stop file ends it.
rm -f "$OUT/sampler.stop"
(
  n=$((DURATION / SAMPLE_EVERY + 3))
  for ((k = 0; k < n; k++)); do
    [[ -e $OUT/sampler.stop ]] && break
    sample load "$T0"
    next=$((T0 + (k + 1) * SAMPLE_EVERY))
    while (($(date +%s) < next)) && [[ ! -e $OUT/sampler.stop ]]; do sleep 0.2; done
  done
) >>"$OUT/samples.tsv" {OP_IN}>&- &
SAMPLER_PID=$!

WRK_RC=0
wait "$WRK_PID" || WRK_RC=$?
WRK_PID=''
touch "$OUT/sampler.stop"
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=''
((WRK_RC == 0)) || log "WARNING: wrk exited $WRK_RC: $(tail -3 "$OUT/wrk.txt")"
if [[ -n $LOGINS_PID ]]; then
  log "wrk done; waiting for the login in flight"
  LOGINS_RC=0
  wait "$LOGINS_PID" || LOGINS_RC=$?
  LOGINS_PID=''
  ((LOGINS_RC == 0)) || log "WARNING: the login loop exited $LOGINS_RC: $(tail -3 "$OUT/logins.log")"
fi
proc_alive "$SG_PID" || die "sidegate exited during the load (see $SGRUN/stderr.log)"

# ---- back to baseline? ---------------------------------------------------------------
log "load done; waiting up to ${SETTLE}s for fds <= $((BASE_FDS + TOLERANCE)) and tasks <= $((BASE_TASKS + TOLERANCE))"
LOAD_END=$(($(date +%s) - T0))
END=''
for ((k = 0; k <= SETTLE; k++)); do   # bounded in count and in time
  END=$(sample settle "$T0")
  printf '%s\n' "$END" >>"$OUT/samples.tsv"
  f=$(field "$END" 4) t=$(field "$END" 5)
  if isint "$t" && ((f <= BASE_FDS + TOLERANCE && t <= BASE_TASKS + TOLERANCE)); then break; fi
  (($(date +%s) - T0 - LOAD_END < SETTLE)) || break
  sleep 1
done
printf 'end\t%s\n' "$(cut -f2- <<<"$END")" >>"$OUT/samples.tsv"
pr=$(probe "$SG/" "${HDR[@]}")
AFTER_STATUS=${pr% *}

# ---- summary -----------------------------------------------------------------------------
set +e
"$PY" - "$OUT" "$DURATION" "$CONNS" "$THREADS" "$PROBE_BYTES" "$AFTER_STATUS" "$WRK_RC" "$TOLERANCE" \
    "$RSS_GROWTH_MAX_PCT" "$LOGINS_MAX" "$SETTLE" "$LOAD_END" >"$OUT/summary.txt" <<'PY'
import csv, os, statistics, sys
out, dur, conns, threads, pbytes, after, wrk_rc, tol, rss_max, logins_max, settle, load_end = sys.argv[1:]
dur, tol, rss_max, pbytes, load_end = int(dur), int(tol), float(rss_max), int(pbytes), int(load_end)
rows = list(csv.DictReader(open(os.path.join(out, "samples.tsv")), delimiter="\t"))
def num(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
for r in rows:
    for k in ("t_s", "rss_kb", "fds", "tasks", "tunnels", "conns_in", "conns_up"):
        r[k] = num(r[k])
base = next(r for r in rows if r["phase"] == "baseline")
end = next(r for r in rows if r["phase"] == "end")
load = [r for r in rows if r["phase"] == "load"]
settle_rows = [r for r in rows if r["phase"] == "settle"]
def peak(k):
    v = [r[k] for r in load + settle_rows if r[k] is not None]
    return max(v) if v else None

stats = None
for line in open(os.path.join(out, "wrk.txt")):
    if line.startswith("STATS "):
        stats = dict(x.split("=", 1) for x in line.split()[1:])
lines, checks = [], []
def p(s=""):
    lines.append(s)
lines.append(open(os.path.join(out, "env.txt")).read().rstrip())
p()
if stats:
    req = int(stats["requests"])
    sock = sum(int(stats[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    non2xx = int(stats["err_status"])
    bpr = int(stats["bytes"]) / req if req else 0.0
    p(f"wrk        {req} requests in {float(stats['duration_s']):.1f} s = {float(stats['rps']):.0f} req/s; "
      f"latency p50 {int(stats['p50_us'])/1000:.2f} ms  p99 {int(stats['p99_us'])/1000:.2f} ms  "
      f"max {int(stats['max_us'])/1000:.2f} ms")
    p(f"           socket errors {sock} (connect {stats['err_connect']}, read {stats['err_read']}, "
      f"write {stats['err_write']}, timeout {stats['err_timeout']}); non-2xx {non2xx}; "
      f"{bpr:.1f} bytes/response (200 probe: {pbytes}); wrk exit {wrk_rc}")
else:
    req, sock, non2xx, bpr = 0, 0, 0, 0.0
    p(f"wrk        no STATS line in wrk.txt (wrk exit {wrk_rc})")
lg = list(csv.DictReader(open(os.path.join(out, "logins.tsv")), delimiter="\t"))
ok_ms = [float(r["ms"]) for r in lg if r["ok"] == "1"]
failed = [r for r in lg if r["ok"] != "1"]
med = f"{statistics.median(ok_ms):.0f} ms" if ok_ms else "n/a"
mx = f", max {max(ok_ms):.0f} ms" if ok_ms else ""
p(f"logins     {len(ok_ms)} ok, {len(failed)} failed (of at most {logins_max}); median {med}{mx}")
for r in failed[:5]:
    p(f"           login {r['i']} failed after {r['ms']} ms: {r['error']}")

def fmt(v):
    return "n/a" if v is None else str(v)
# Growth: the highest sample of the load's last third against the highest of its middle
# third. RSS follows the connections open at each sample and reaches its plateau at a
# different time in each run; a leak keeps the last third above the middle one.
def highest(lo, hi):
    xs = [r for r in load if r["t_s"] is not None and lo <= r["t_s"] < hi and r["rss_kb"] is not None]
    return max(xs, key=lambda r: r["rss_kb"]) if xs else None
middle = highest(dur / 3, 2 * dur / 3)
last = highest(2 * dur / 3, dur + 1)
growth = growth_pct = None
if middle and last:
    growth = last["rss_kb"] - middle["rss_kb"]
    growth_pct = 100.0 * growth / middle["rss_kb"]
p(f"RSS kB     baseline {fmt(base['rss_kb'])}, peak {fmt(peak('rss_kb'))}, end {fmt(end['rss_kb'])}")
if growth is not None:
    p(f"           highest of the last third {last['rss_kb']} (t={last['t_s']} s) vs of the middle third "
      f"{middle['rss_kb']} (t={middle['t_s']} s): {growth:+d} kB ({growth_pct:+.1f} %)")
p(f"fds        baseline {fmt(base['fds'])}, peak {fmt(peak('fds'))}, end {fmt(end['fds'])}")
p(f"tasks      baseline {fmt(base['tasks'])}, peak {fmt(peak('tasks'))}, end {fmt(end['tasks'])}")
p(f"conns      client baseline/peak/end {fmt(base['conns_in'])}/{fmt(peak('conns_in'))}/{fmt(end['conns_in'])}, "
  f"upstream {fmt(base['conns_up'])}/{fmt(peak('conns_up'))}/{fmt(end['conns_up'])}; "
  f"websocket tunnels end {fmt(end['tunnels'])}")
p(f"settle     end sample at t={fmt(end['t_s'])} s, {end['t_s'] - load_end} s after the load ended "
  f"(t={load_end} s; limit {settle} s)")
p()
errors = sock + non2xx + len(failed)
def check(name, ok, detail):
    checks.append(ok)
    p(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
check("no errors", stats is not None and req > 0 and errors == 0 and wrk_rc == "0",
      f"{sock} socket + {non2xx} non-2xx + {len(failed)} login failures = {errors}")
same = stats is not None and req > 0 and abs(bpr - pbytes) <= 0.05 * pbytes and after == "200"
check("responses are the 200 page", same,
      f"{bpr:.1f} bytes/response vs the probe's {pbytes}; the cookie after the load answers {after}")
check(f"RSS growth, last third vs middle third of the load < {rss_max:g} %", growth_pct is not None and growth_pct < rss_max,
      "n/a" if growth_pct is None else f"{growth:+d} kB ({growth_pct:+.1f} %)")
check("fds back to baseline", None not in (end["fds"], base["fds"]) and end["fds"] <= base["fds"] + tol,
      f"end {fmt(end['fds'])} <= baseline {fmt(base['fds'])} + {tol}")
check("tasks back to baseline", None not in (end["tasks"], base["tasks"]) and end["tasks"] <= base["tasks"] + tol,
      f"end {fmt(end['tasks'])} <= baseline {fmt(base['tasks'])} + {tol}")
if (not all(checks[3:]) and end["conns_in"] == 0 and None not in (end["conns_up"], base["conns_up"])
        and end["conns_up"] > base["conns_up"]):
    p(f"note  no client connection is open; {end['conns_up']} sockets to the upstream are still open "
      f"(baseline {base['conns_up']}): sidegate's upstream pool keeps idle connections, and a task each, "
      f"until its 60 s idle timeout or nginx's 65 s keepalive_timeout ends them (SETTLE=90 waits them out)")
p(f"RESULT {'PASS' if all(checks) else 'FAIL'}")
print("\n".join(lines))
sys.exit(0 if all(checks) else 3)
PY
RC=$?
set -e
cat "$OUT/summary.txt"
case $RC in
  0) log "all checks passed; $OUT/summary.txt (samples.tsv, logins.tsv, wrk.txt, sidegate/)" ;;
  3) log "some checks FAILED; $OUT/summary.txt (samples.tsv, logins.tsv, wrk.txt, sidegate/)"; exit 1 ;;
  *) die "the summary failed (exit $RC); raw data in $OUT" ;;
esac
