#!/usr/bin/env bash
# sidegate benchmark (not a test). Loopback only; every load is bounded by
# wrk -d and a hard `timeout`; everything it starts is stopped on exit.
#
# Starts, on free 127.0.0.1 ports: an nginx upstream (bench/nginx.conf.in),
# the test OP (tests/idp/provider.mjs) and target/release/sidegate, logs in as
# alice with bench/login.py, then measures with wrk (after a short warm-up):
#   a upstream    nginx directly                              /         200
#   b public      sidegate, public path (no session needed)   /public/  200
#   c session     sidegate, protected path, session cookie    /         200
#   d redirect    sidegate, protected path, browser, no cookie /        302
#   e auth        sidegate forward-auth check, session cookie  /.sidegate/auth 200
#                 (X-Original-URI as nginx sends it; wrk is the trusted proxy)
# For each: req/s, p50/p99, errors and non-2xx/3xx responses, peak RSS of the
# server under test (VmRSS every 0.5 s; nginx for a, sidegate otherwise), its
# CPU µs per request (utime+stime), and req/s ratios to a and to b.
#
#   bench/bench.sh
#   RUNS=3 DURATION=10 CONNS=64 THREADS=2 WARMUP=2 SCENARIOS="a b c d" bench/bench.sh
#   SKIP_BUILD=1 bench/bench.sh      use the existing target/release/sidegate
#   SIDEGATE_BIN=/path/to/sidegate bench/bench.sh   bench that binary (no build)
# Output: .run/bench/<timestamp>/ (results.tsv, results.md, wrk logs, service logs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/bench"
cd "$ROOT"

RUNS="${RUNS:-2}"
DURATION="${DURATION:-10}"      # seconds per measurement
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-2}"           # seconds, same load, not recorded
PAUSE="${PAUSE:-1}"             # seconds between scenarios
SCENARIOS="${SCENARIOS:-a b c d e}"
NGINX_WORKERS="${NGINX_WORKERS:-1}"
LOGINS="${LOGINS:-5}"           # timed full login flows at the end (0 = none)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
isint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in RUNS DURATION CONNS THREADS WARMUP PAUSE NGINX_WORKERS LOGINS; do
  isint "${!v}" || die "$v must be a non-negative integer, got '${!v}'"
done
((RUNS >= 1 && RUNS <= 10)) || die "RUNS must be 1..10"
((DURATION >= 1 && DURATION <= 120)) || die "DURATION must be 1..120 s"
((WARMUP <= 30)) || die "WARMUP must be 0..30 s"
((CONNS >= 1 && CONNS <= 1024)) || die "CONNS must be 1..1024"
((THREADS >= 1 && THREADS <= 16 && THREADS <= CONNS)) || die "THREADS must be 1..16 and <= CONNS"
((LOGINS <= 100)) || die "LOGINS must be 0..100"
for s in $SCENARIOS; do [[ $s == [abcde] ]] || die "unknown scenario '$s' (a b c d e)"; done

# ---- tools ----------------------------------------------------------------------
apt_ensure() {   # install missing Debian packages without starting their services
  local missing=() p made_policy=0
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  [[ $(id -u) -eq 0 ]] || die "missing Debian packages: ${missing[*]} (install them or run as root)"
  log "installing Debian packages: ${missing[*]}"
  mkdir -p "$ROOT/.run/bench"
  local alog="$ROOT/.run/bench/apt.log"
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  local ok=0
  if DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$alog" 2>&1 \
     || { DEBIAN_FRONTEND=noninteractive apt-get update >>"$alog" 2>&1 \
          && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$alog" 2>&1; }; then
    ok=1
  fi
  ((made_policy)) && rm -f /usr/sbin/policy-rc.d
  ((ok)) || die "apt-get install ${missing[*]} failed, see $alog"
}
apt_ensure wrk nginx-light curl ca-certificates
command -v node >/dev/null || die "node not found (Node.js >= 20 runs the test OP)"
command -v python3 >/dev/null || die "python3 not found"
PY=python3
if ! "$PY" -c 'import requests' 2>/dev/null; then
  log "installing the Python package requests"
  if ! "$PY" -m pip install --quiet requests >/dev/null 2>&1; then
    apt_ensure python3-requests
    PY=/usr/bin/python3   # Debian's package serves Debian's interpreter
  fi
  "$PY" -c 'import requests' 2>/dev/null || die "cannot import requests with $PY"
fi
scripts/test-deps.sh   # tests/idp/node_modules (and the test packages)

SIDEGATE="${SIDEGATE_BIN:-$ROOT/target/release/sidegate}"
if [[ -z ${SIDEGATE_BIN:-} && ${SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release --locked"
  cargo build --release --locked
fi
[[ -x $SIDEGATE ]] || die "$SIDEGATE not found (build it: cargo build --release)"

# ---- run directory, ports ---------------------------------------------------------
OUT="$ROOT/.run/bench/$(date +%Y%m%d-%H%M%S)"
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

wait_port() {    # PORT SECONDS: until something listens on 127.0.0.1:PORT
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
proc_alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# ---- stopping what we start (by pid) ----------------------------------------------
NGINX_PID='' OP_PID='' SG_PID='' SAMPLER_PID='' OP_IN=''
stop_pid() {     # PID NAME: TERM, wait up to 5 s, then KILL
  local pid=$1 name=$2 i
  [[ -n $pid ]] || return 0
  proc_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do proc_alive "$pid" || break; sleep 0.1; done
  if proc_alive "$pid"; then log "$name (pid $pid) ignored TERM, sending KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null
  stop_pid "$SG_PID" sidegate
  # closing the OP's stdin ends it by itself; TERM in case it did not
  [[ -n $OP_IN ]] && exec {OP_IN}>&-
  stop_pid "$OP_PID" oidc-provider
  stop_pid "$NGINX_PID" nginx
  [[ -n $NGINX_PID$OP_PID$SG_PID ]] && log "stopped the services this bench started"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- upstream: nginx ------------------------------------------------------------
RUN="$OUT/nginx"
mkdir -p "$RUN/www/public" "$RUN/tmp"
printf 'hello from upstream\n' >"$RUN/www/index.txt"
printf 'hello from upstream\n' >"$RUN/www/public/index.txt"
sed -e "s|@RUN@|$RUN|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@NGINX_WORKERS@|$NGINX_WORKERS|g" \
  "$HERE/nginx.conf.in" >"$RUN/nginx.conf"
! grep -q '@[A-Z_]*@' "$RUN/nginx.conf" || die "unrendered placeholder in $RUN/nginx.conf"
/usr/sbin/nginx -t -q -c "$RUN/nginx.conf" -p "$RUN" 2>"$RUN/configtest.log" \
  || { cat "$RUN/configtest.log" >&2; die "nginx config test failed"; }
/usr/sbin/nginx -c "$RUN/nginx.conf" -p "$RUN" </dev/null >"$RUN/stdout.log" 2>&1 &
NGINX_PID=$!
wait_port "$UPSTREAM_PORT" 10 || { cat "$RUN/error.log" >&2; die "nginx did not come up"; }
log "upstream nginx: pid $NGINX_PID on $UP"

# ---- the test OP ------------------------------------------------------------------
# Its stdin is a FIFO whose only writer is this shell: if the bench dies in
# any way, the OP sees EOF and exits by itself.
mkfifo "$OUT/op.stdin"
exec {OP_IN}<>"$OUT/op.stdin"
OP_REDIRECT_URIS="$SG/.sidegate/oidc/callback" OP_PORT=0 \
  node "$ROOT/tests/idp/provider.mjs" <"$OUT/op.stdin" {OP_IN}>&- >"$OUT/op.stdout" 2>"$OUT/op.stderr" &
OP_PID=$!
ISSUER=
for ((i = 0; i < 200; i++)); do   # 20 s
  line=$(head -n1 "$OUT/op.stdout" 2>/dev/null || true)
  if [[ $line == READY\ * ]]; then
    ISSUER=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["issuer"])' "${line#READY }") || die "bad READY line: $line"
    break
  fi
  proc_alive "$OP_PID" || { cat "$OUT/op.stderr" >&2; die "the test OP exited"; }
  sleep 0.1
done
[[ -n $ISSUER ]] || { cat "$OUT/op.stderr" >&2; die "the test OP printed no READY line in 20 s"; }
log "test OP: pid $OP_PID, issuer $ISSUER"

# ---- sidegate ---------------------------------------------------------------------
SGRUN="$OUT/sidegate"
mkdir -p "$SGRUN"
chmod 700 "$SGRUN"
"$SIDEGATE" keys generate --out-dir "$SGRUN" >"$SGRUN/keys.log" 2>&1 {OP_IN}>&- \
  || { cat "$SGRUN/keys.log" >&2; die "sidegate keys generate failed"; }
[[ -s $SGRUN/cookie-secrets && -s $SGRUN/assertion-key.pem ]] \
  || die "sidegate keys generate did not write cookie-secrets and assertion-key.pem"
(umask 077; printf 'sidegate-secret' >"$SGRUN/client-secret")
cat >"$SGRUN/sidegate.toml" <<EOF
[server]
listen = ["127.0.0.1:$SG_PORT"]
admin_listen = "127.0.0.1:$SG_ADMIN_PORT"
public_url = "$SG"
trusted_proxies = ["127.0.0.1/32"]
# The login scenario measures logins per second from one address: no per-client cap.
login_rate_per_minute = 0
# The load generator opens many connections at once.
max_connections = 20000

[upstream]
url = "$UP"

[oidc]
issuer = "$ISSUER"
client_id = "sidegate"
client_secret_file = "$SGRUN/client-secret"
scopes = ["openid", "email", "profile", "roles"]

[session]
secrets_file = "$SGRUN/cookie-secrets"
cookie_secure = false

[assertion]
signing_keys_file = "$SGRUN/assertion-key.pem"

[identity]
roles = ["admin", "developer", "viewer"]
default_role = "viewer"

[access]
public_paths = ["/public/"]
EOF
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
log "sidegate: pid $SG_PID on $SG (admin 127.0.0.1:$SG_ADMIN_PORT)"

# ---- measurement helpers ----------------------------------------------------------
group_pids() { echo "$1"; pgrep -P "$1" || true; }   # nginx: master + workers
group_ticks() {  # utime+stime of a process and its children, clock ticks
  local t=0 p v
  for p in $(group_pids "$1"); do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || continue
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
group_rss() {    # VmRSS in kB, summed over the group
  local p r t=0
  for p in $(group_pids "$1"); do
    r=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null) || continue
    t=$((t + ${r:-0}))
  done
  echo "$t"
}
start_sampler() {  # PID FILE: RSS every 0.5 s, bounded count
  local pid=$1 file=$2 n=$(( (DURATION + WARMUP + 30) * 2 )) i
  ( for ((i = 0; i < n; i++)); do group_rss "$pid"; sleep 0.5; done ) >"$file" {OP_IN}>&- &
  SAMPLER_PID=$!
}
stop_sampler() { kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=; }
drain() {        # wait (<= 20 s) until PID is idle so queued work does not leak into the next run
  local t0 t1 i
  for ((i = 0; i < 40; i++)); do
    t0=$(group_ticks "$1"); sleep 0.5; t1=$(group_ticks "$1")
    (( t1 - t0 <= CLK_TCK / 20 )) && return 0     # <= 10% of one core
  done
  log "WARNING: pid $1 still busy after 20 s"
}
probe() {        # URL [curl args]: "status response_bytes"
  local url=$1; shift
  curl -s -o /dev/null --max-time 5 "$@" -w '%{http_code} %{size_header} %{size_download}' "$url" \
    | awk '{print $1, $2 + $3}'
}

# Every request looks like a browser navigation: sidegate answers an
# unauthenticated request that does not accept text/html with 401, not 302.
BROWSER_HDR=(-H "Accept: text/html,application/xhtml+xml,*/*;q=0.8" -H "User-Agent: sidegate-bench/1.0")

printf 'round\tscenario\turl\texpect\tprobe_bytes\trequests\tduration_s\trps\tp50_us\tp90_us\tp99_us\tmax_us\terrors\tnon2xx3xx\tbytes_per_resp\tsut\trss_peak_kb\tcpu_us_per_req\n' >"$OUT/results.tsv"

run_scenario() {  # ROUND ID URL EXPECT_STATUS SUT_PID SUT_NAME [extra header args]
  local round=$1 id=$2 url=$3 expect=$4 sut=$5 sutname=$6; shift 6
  local hdr=("${BROWSER_HDR[@]}" "$@") tag="r${round}-${id}"
  local pr pstatus pbytes
  proc_alive "$sut" || die "$tag: $sutname (pid $sut) is not running"
  drain "$sut"
  pr=$(probe "$url" "${hdr[@]}"); pstatus=${pr% *}; pbytes=${pr#* }
  [[ $pstatus == "$expect" ]] || die "$tag: probe of $url answered $pstatus, expected $expect"
  log "$tag: $url (probe $pstatus, $pbytes bytes), warm-up ${WARMUP}s, then ${DURATION}s -t$THREADS -c$CONNS"
  if ((WARMUP > 0)); then
    timeout -k 5 $((WARMUP + 15)) wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" --timeout 10s "${hdr[@]}" "$url" \
        >"$OUT/$tag.warmup.txt" 2>&1 {OP_IN}>&- \
      || die "$tag: warm-up wrk failed: $(tail -3 "$OUT/$tag.warmup.txt")"
    drain "$sut"
  fi
  local c0 c1
  start_sampler "$sut" "$OUT/$tag.rss.txt"
  c0=$(group_ticks "$sut")
  timeout -k 5 $((DURATION + 20)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 10s --latency \
      -s "$HERE/wrk-stats.lua" "${hdr[@]}" "$url" >"$OUT/$tag.wrk.txt" 2>&1 {OP_IN}>&- \
    || { stop_sampler; die "$tag: wrk failed or timed out: $(tail -3 "$OUT/$tag.wrk.txt")"; }
  c1=$(group_ticks "$sut")
  stop_sampler
  local stats
  stats=$(grep '^STATS ' "$OUT/$tag.wrk.txt") || die "$tag: no STATS line in the wrk output"
  # the same request still answers the same way afterwards (session alive)
  pr=$(probe "$url" "${hdr[@]}")
  [[ ${pr% *} == "$expect" ]] || die "$tag: after the load $url answered ${pr% *}, expected $expect"
  "$PY" - "$OUT/results.tsv" "$round" "$id" "$url" "$expect" "$pbytes" "$stats" "$OUT/$tag.rss.txt" \
      "$c0" "$c1" "$CLK_TCK" "$sutname" <<'PY'
import sys
out, rnd, sid, url, expect, pbytes, stats, rssf, c0, c1, tck, sutname = sys.argv[1:]
kv = dict(x.split("=", 1) for x in stats.split()[1:])
req = int(kv["requests"])
if req == 0:
    sys.exit(f"r{rnd}-{sid}: wrk completed no request")
non2xx3xx = int(kv["err_status"])
errors = sum(int(kv[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout"))
bpr = int(kv["bytes"]) / req
# a 302 must not pass for a 200 (or the reverse): sizes must match the probe
if abs(bpr - int(pbytes)) > 0.05 * int(pbytes):
    sys.exit(f"r{rnd}-{sid}: wrk read {bpr:.1f} bytes/response, the probe {pbytes}: the responses differ")
rss = max((int(l) for l in open(rssf) if l.strip().isdigit()), default=0)
cpu_us = 1e6 * (int(c1) - int(c0)) / int(tck) / req
row = [rnd, sid, url, expect, pbytes, req, kv["duration_s"], kv["rps"], kv["p50_us"], kv["p90_us"],
       kv["p99_us"], kv["max_us"], errors, non2xx3xx, f"{bpr:.1f}", sutname, rss, f"{cpu_us:.1f}"]
open(out, "a").write("\t".join(map(str, row)) + "\n")
if errors or non2xx3xx:
    print(f"WARNING r{rnd}-{sid}: {errors} socket errors, {non2xx3xx} non-2xx/3xx: {stats}", file=sys.stderr)
print(f"  -> {float(kv['rps']):9.0f} req/s  p50 {int(kv['p50_us'])/1000:.2f} ms  p99 {int(kv['p99_us'])/1000:.2f} ms  "
      f"{sutname} RSS peak {rss/1024:.1f} MiB  {cpu_us:.1f} us CPU/req  errors {errors}  non-2xx/3xx {non2xx3xx}",
      file=sys.stderr)
PY
  sleep "$PAUSE"
}

{
  echo "# sidegate bench $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "wrk -t$THREADS -c$CONNS -d${DURATION}s --latency (warm-up ${WARMUP}s), RUNS=$RUNS, SCENARIOS=$SCENARIOS"
  echo "nproc=$(nproc) kernel=$(uname -r) loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "sidegate: $("$SIDEGATE" --version 2>/dev/null | head -1 || echo unknown) git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
  echo "nginx-light $(dpkg-query -W -f='${Version}' nginx-light 2>/dev/null) ($NGINX_WORKERS worker), wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null)"
  echo "oidc-provider $(node -p "require('$ROOT/tests/idp/node_modules/oidc-provider/package.json').version"), node $(node --version)"
} >"$OUT/env.txt"

for ((r = 1; r <= RUNS; r++)); do
  log "=== round $r/$RUNS"
  COOKIE=$(timeout -k 5 90 "$PY" "$HERE/login.py" "$SG/" {OP_IN}>&-) || die "login.py failed (see the messages above)"
  for s in $SCENARIOS; do
    case $s in
      a) run_scenario "$r" a-upstream "$UP/" 200 "$NGINX_PID" nginx ;;
      b) run_scenario "$r" b-public "$SG/public/" 200 "$SG_PID" sidegate ;;
      c) run_scenario "$r" c-session "$SG/" 200 "$SG_PID" sidegate -H "Cookie: $COOKIE" ;;
      d) run_scenario "$r" d-redirect "$SG/" 302 "$SG_PID" sidegate ;;
      e) run_scenario "$r" e-auth "$SG/.sidegate/auth" 200 "$SG_PID" sidegate -H "Cookie: $COOKIE" -H "X-Original-URI: /reports?q=1" -H "X-Original-Method: GET" ;;
    esac
  done
done

# full browser logins, sequential, bounded: wall time of the whole flow
if ((LOGINS > 0)); then
  timeout -k 5 120 "$PY" - "$HERE" "$LOGINS" "$SG/" >"$OUT/logins.txt" {OP_IN}>&- <<'PY' || die "login timing failed"
import statistics, sys, time
sys.path.insert(0, sys.argv[1])
from login import Flow, parse_args
n, url = int(sys.argv[2]), sys.argv[3]
ms = []
for _ in range(n):
    t = time.perf_counter(); Flow(parse_args([url])).run(); ms.append(1000 * (time.perf_counter() - t))
print(f"login flow (alice, incl. the cookie-only check): n={n} median {statistics.median(ms):.1f} ms, "
      f"min {min(ms):.1f}, max {max(ms):.1f}")
PY
  cat "$OUT/logins.txt" >&2
fi
echo "sidegate RSS idle after the load: $(group_rss "$SG_PID") kB" >>"$OUT/env.txt"

"$PY" - "$OUT/results.tsv" "$OUT/env.txt" "$OUT/logins.txt" >"$OUT/results.md" <<'PY'
import csv, os, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print(open(sys.argv[2]).read())
if os.path.exists(sys.argv[3]):
    print(open(sys.argv[3]).read())
order = []
for r in rows:
    if r["scenario"] not in order:
        order.append(r["scenario"])
def med(sid, key):
    return statistics.median(float(r[key]) for r in rows if r["scenario"] == sid)
def ratio(sid, base_prefix):
    base = next((s for s in order if s.startswith(base_prefix)), None)
    return f"{med(sid, 'rps') / med(base, 'rps'):.3f}" if base else "n/a"
print("Medians over the rounds. RSS/CPU are the server under test's (nginx for a, sidegate otherwise);")
print("errors = socket errors (connect/read/write/timeout); non-2xx/3xx = responses with status >= 400.")
print()
print("| scenario | status | req/s | vs a | vs b | p50 ms | p99 ms | errors | non-2xx/3xx | server | RSS peak MiB | CPU µs/req |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
for sid in order:
    rs = [r for r in rows if r["scenario"] == sid]
    print(f"| {sid} | {rs[0]['expect']} | {med(sid, 'rps'):.0f} | {ratio(sid, 'a-')} | {ratio(sid, 'b-')} | "
          f"{med(sid, 'p50_us') / 1000:.2f} | {med(sid, 'p99_us') / 1000:.2f} | "
          f"{sum(int(r['errors']) for r in rs)} | {sum(int(r['non2xx3xx']) for r in rs)} | {rs[0]['sut']} | "
          f"{max(int(r['rss_peak_kb']) for r in rs) / 1024:.1f} | {med(sid, 'cpu_us_per_req'):.1f} |")
print()
print("Per round:")
print()
print("| round | scenario | req/s | p50 ms | p99 ms | errors | non-2xx/3xx | RSS peak MiB | CPU µs/req |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['round']} | {r['scenario']} | {float(r['rps']):.0f} | {int(r['p50_us']) / 1000:.2f} | "
          f"{int(r['p99_us']) / 1000:.2f} | {r['errors']} | {r['non2xx3xx']} | "
          f"{int(r['rss_peak_kb']) / 1024:.1f} | {r['cpu_us_per_req']} |")
PY
cat "$OUT/results.md"
log "results: $OUT/results.md (raw: $OUT/*.wrk.txt, logs: $OUT/sidegate/, $OUT/op.stderr)"
