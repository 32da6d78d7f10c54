#!/usr/bin/env bash
# sidegate benchmark (not a test). Loopback only; every load is bounded by
# wrk -d and a hard `timeout`; everything it starts is stopped on exit.
#
# Starts, on free 127.0.0.1 ports: an nginx upstream (bench/nginx.conf.in),
# the test OP (tests/idp/provider.mjs) and target/release/sidegate, plus what
# the selected scenarios need (below); logs in as alice (bench/login.py), then
# measures with wrk, after a short warm-up, the scenarios interleaved, RUNS rounds:
#   a upstream    nginx directly                              /         200
#   b public      sidegate, public path (no session needed)   /public/  200
#   c session     sidegate, protected path, session cookie    /         200
#   d redirect    sidegate, protected path, browser, no cookie /        302
#   e auth        sidegate forward-auth check, session cookie  /.sidegate/auth 200
#                 (X-Original-URI as nginx sends it; wrk is the trusted proxy)
#   f apache      Apache (MPM event) plain reverse proxy       /         200
#   g openidc     Apache + mod_auth_openidc, session cookie     /         200
#                 (logged in through the same test OP, same client)
#   h mellon      Apache + mod_auth_mellon, session cookie      /         200
#                 (SAML, against SimpleSAMLphp from tests/saml-idp under php -S)
#   i redis       a second sidegate with session.store = "redis" (its own
#                 redis-server), protected path, its own session cookie  / 200
#   j bearer      sidegate, protected path, Authorization: Bearer with a JWT
#                 access token (ES256, at+jwt) from the test OP's client
#                 credentials grant, verified against its JWKS        /         200
#   k nginx-proxy nginx as a plain reverse proxy (bench/nginx-proxy.conf.in,
#                 NGINX_PROXY_WORKERS workers, 2 by default): one more hop at
#                 its cheapest here, the floor for b and f   /         200
# Every proxy forwards to the same nginx. The Apache instances (bench/apache/)
# run in the foreground with their own ServerRoot, config and PidFile under the
# run dir; the system's apache2 service and /etc/apache2 are not used.
# For each: req/s, p50/p99, errors and non-2xx/3xx responses, peak RSS of the
# server under test (VmRSS every 0.5 s, summed over the process and its
# children: nginx for a, Apache for f-h, sidegate otherwise), its CPU µs per
# request (utime+stime; for i redis-server's too, apart), req/s ratios to a and b.
# Then LOGINS full browser logins each, timed: sidegate OIDC, sidegate SAML (a
# SAML-only sidegate against the same IdP, started for this), and Apache
# mod_auth_openidc / mod_auth_mellon when g / h run; then, for each, logins per
# second with LOGIN_CLIENTS clients at once for LOGIN_SECONDS, and the CPU per
# login of the proxy and of the IdP.
# Installs what is missing with apt (services kept from starting): wrk, nginx,
# apache2 and its modules, redis-server, simplesamlphp and php.
#
#   bench/bench.sh
#   RUNS=3 DURATION=10 CONNS=64 THREADS=2 WARMUP=2 SCENARIOS="a b c d" bench/bench.sh
#   SCENARIOS="a b c f g h i" LOGINS=0 bench/bench.sh
#   SKIP_BUILD=1 bench/bench.sh      use the existing target/release/sidegate
#   SIDEGATE_BIN=/path/to/sidegate bench/bench.sh   bench that binary (no build)
#   INSTRUCTIONS=2000 SCENARIOS="b c d e" bench/bench.sh
#       instead of wrk: sidegate under valgrind's callgrind, that many requests per
#       scenario on one keep-alive connection after 200 uncounted ones; prints the
#       instructions per request (stable on a noisy machine, unlike req/s) and keeps
#       each scenario's profile (callgrind_annotate FILE). Scenarios b-e, i and j.
#   SCHED=1 SCENARIOS="a c g" RUNS=1 bench/bench.sh
#       also samples /proc for the middle half of each measured load: CPU, time slices,
#       run and run-queue wait per slice, involuntary switches of the server under test,
#       nginx and wrk (bench/schedstat.py), into <round>-<scenario>.sched.txt
#   TRACE=1 SCENARIOS="c k g" RUNS=1 bench/bench.sh
#       also records 1 s of the kernel's scheduler events (perf sched) in the middle of each
#       measured load and writes how long each thread kept a CPU and waited for one, per
#       thread group, into <round>-<scenario>.trace.txt (bench/schedtrace.py; needs root)
#   ORDER=1 INSTRUCTIONS=300 SCENARIOS="b c d e i j" bench/bench.sh
#       as INSTRUCTIONS, also counting start-up (OIDC, SAML, local accounts, Redis), 20
#       local sign-ins, 400 more used in turn for 5 s (as memory.sh does), each
#       scenario's warm-up and 3 s of wrk -c16, and writes
#       bench/symbol-order.txt: the functions that ran, those requests and logins run
#       first. build.rs has the linker place them first, together (see BENCHMARKS.md,
#       memory).
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
SCENARIOS="${SCENARIOS:-a b c d e f g h i j k}"
NGINX_WORKERS="${NGINX_WORKERS:-1}"
NGINX_PROXY_WORKERS="${NGINX_PROXY_WORKERS:-2}"   # scenario k
LOGINS="${LOGINS:-5}"           # timed full login flows at the end (0 = none, nor the rate)
LOGIN_CLIENTS="${LOGIN_CLIENTS:-4}"  # then logins per second: that many clients at once (0 = none)
LOGIN_SECONDS="${LOGIN_SECONDS:-10}" # for that long (no flow starts later; at most 2000 each)
INSTRUCTIONS="${INSTRUCTIONS:-0}"  # > 0: count instructions per request (callgrind), no wrk
ORDER="${ORDER:-0}"             # 1: with INSTRUCTIONS, write bench/symbol-order.txt
SCHED="${SCHED:-0}"             # 1: how the kernel scheduled each load (bench/schedstat.py)
TRACE="${TRACE:-0}"             # 1: a 1 s kernel scheduler trace of each load (bench/schedtrace.py)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib.sh
source "$ROOT/bench/lib.sh"
isint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in RUNS DURATION CONNS THREADS WARMUP PAUSE NGINX_WORKERS NGINX_PROXY_WORKERS LOGINS LOGIN_CLIENTS LOGIN_SECONDS INSTRUCTIONS ORDER SCHED TRACE; do
  isint "${!v}" || die "$v must be a non-negative integer, got '${!v}'"
done
((RUNS >= 1 && RUNS <= 10)) || die "RUNS must be 1..10"
((DURATION >= 1 && DURATION <= 120)) || die "DURATION must be 1..120 s"
((WARMUP <= 30)) || die "WARMUP must be 0..30 s"
((CONNS >= 1 && CONNS <= 1024)) || die "CONNS must be 1..1024"
raise_nofile "$CONNS"
((THREADS >= 1 && THREADS <= 16 && THREADS <= CONNS)) || die "THREADS must be 1..16 and <= CONNS"
((LOGINS <= 100)) || die "LOGINS must be 0..100"
((LOGIN_CLIENTS <= 16)) || die "LOGIN_CLIENTS must be 0..16"
((LOGIN_SECONDS >= 1 && LOGIN_SECONDS <= 60)) || die "LOGIN_SECONDS must be 1..60"
for s in $SCENARIOS; do [[ $s == [a-k] ]] || die "unknown scenario '$s' (a b c d e f g h i j k)"; done
wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }   # SCENARIO: is it selected
if ((INSTRUCTIONS > 0)); then
  ((INSTRUCTIONS <= 100000)) || die "INSTRUCTIONS must be 1..100000 requests"
  for s in $SCENARIOS; do [[ $s == [b-eij] ]] || die "INSTRUCTIONS counts sidegate's scenarios (b c d e i j), not '$s'"; done
  LOGINS=0
fi
((ORDER == 0 || INSTRUCTIONS > 0)) || die "ORDER=1 needs INSTRUCTIONS (requests per scenario), e.g. INSTRUCTIONS=300"
# The SAML IdP serves scenario h and the SAML login timing.
NEED_SAML_IDP=0
{ wants h || ((LOGINS > 0)) || ((ORDER)); } && NEED_SAML_IDP=1

# ---- tools ----------------------------------------------------------------------
apt_ensure wrk nginx-light curl ca-certificates
{ wants f || wants g || wants h; } && apt_ensure apache2
wants g && apt_ensure libapache2-mod-auth-openidc
wants h && apt_ensure libapache2-mod-auth-mellon
wants i && apt_ensure redis-server
((INSTRUCTIONS > 0)) && apt_ensure valgrind
if [[ $TRACE == 1 ]]; then
  apt_ensure linux-perf
  [[ -e /sys/kernel/tracing/events/sched ]] || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null \
    || die "TRACE=1 needs the kernel's sched tracepoints: mount tracefs on /sys/kernel/tracing (as root)"
fi
((ORDER)) && apt_ensure apache2-utils   # htpasswd: a local account's bcrypt hash
# php8.2-cgi satisfies php8.2's SAPI dependency without pulling in mod_php (as scripts/test-deps.sh)
((NEED_SAML_IDP)) && apt_ensure simplesamlphp php8.2-cli php8.2-cgi php8.2-xml openssl
op_tools

release_binary

# ---- run directory, ports ---------------------------------------------------------
OUT="$ROOT/.run/bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
CLK_TCK=$(getconf CLK_TCK)

# distinct free ports, chosen while all the sockets are held (some stay unused)
read -r UPSTREAM_PORT SG_PORT SG_ADMIN_PORT SGR_PORT SGR_ADMIN_PORT SGS_PORT SGS_ADMIN_PORT \
  REDIS_PORT SAML_IDP_PORT APACHE_PORT OPENIDC_PORT MELLON_PORT SGL_PORT SGL_ADMIN_PORT \
  NGINX_PROXY_PORT < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(15)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))
for s in ss: s.close()')
[[ -n ${NGINX_PROXY_PORT:-} ]] || die "could not pick free ports"
UP="http://127.0.0.1:$UPSTREAM_PORT"
SG="http://127.0.0.1:$SG_PORT"              # sidegate, cookie sessions (b-e)
SGR="http://127.0.0.1:$SGR_PORT"            # sidegate, Redis sessions (i)
SGS="http://127.0.0.1:$SGS_PORT"            # sidegate, SAML only (login timing)
SAML_IDP="http://127.0.0.1:$SAML_IDP_PORT"  # SimpleSAMLphp
APACHE="http://127.0.0.1:$APACHE_PORT"      # Apache plain (f)
OPENIDC="http://127.0.0.1:$OPENIDC_PORT"    # Apache + mod_auth_openidc (g)
MELLON="http://127.0.0.1:$MELLON_PORT"      # Apache + mod_auth_mellon (h)
NGINX_PROXY="http://127.0.0.1:$NGINX_PROXY_PORT"  # nginx as a plain proxy (k)
OPENIDC_CALLBACK=/redirect_uri
MELLON_CALLBACK=/mellon/postResponse

render() {       # TEMPLATE OUT NAME=VALUE...: copy TEMPLATE to OUT with each @NAME@ replaced
  local in=$1 out=$2 kv v args=()
  shift 2
  for kv in "$@"; do
    v=${kv#*=}
    [[ $v != *[\|\&\\\'$'\n']* ]] || die "render $in: unsafe character in ${kv%%=*}: $v"
    args+=(-e "s|@${kv%%=*}@|$v|g")
  done
  sed "${args[@]}" "$in" >"$out"
  ! grep -q '@[A-Z_][A-Z_]*@' "$out" || die "unrendered placeholder in $out: $(grep -o '@[A-Z_][A-Z_]*@' "$out" | sort -u | xargs)"
}

# ---- stopping what we start (by pid) ----------------------------------------------
SERVICES=()      # "pid name" of every service started, in order; stopped in reverse
SAMPLER_PID='' OP_IN=''
started() { SERVICES+=("$1 $2"); }   # PID NAME
cleanup() {
  set +e
  [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null
  # closing the OP's stdin ends it by itself; it is stopped by pid below anyway
  [[ -n $OP_IN ]] && exec {OP_IN}>&-
  local i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    # shellcheck disable=SC2086  # "pid name"
    stop_pid ${SERVICES[i]}
  done
  ((${#SERVICES[@]})) && log "stopped the services this bench started"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- upstream: nginx ------------------------------------------------------------
RUN="$OUT/nginx"
mkdir -p "$RUN/www/public" "$RUN/tmp"
printf 'hello from upstream\n' >"$RUN/www/index.txt"
printf 'hello from upstream\n' >"$RUN/www/public/index.txt"
render "$HERE/nginx.conf.in" "$RUN/nginx.conf" RUN="$RUN" UPSTREAM_PORT="$UPSTREAM_PORT" NGINX_WORKERS="$NGINX_WORKERS"
/usr/sbin/nginx -t -q -c "$RUN/nginx.conf" -p "$RUN" 2>"$RUN/configtest.log" \
  || { cat "$RUN/configtest.log" >&2; die "nginx config test failed"; }
/usr/sbin/nginx -c "$RUN/nginx.conf" -p "$RUN" </dev/null >"$RUN/stdout.log" 2>&1 &
NGINX_PID=$!
started "$NGINX_PID" nginx
wait_port "$UPSTREAM_PORT" 10 || { cat "$RUN/error.log" >&2; die "nginx did not come up"; }
log "upstream nginx: pid $NGINX_PID on $UP"
if wants k; then
  PRUN="$OUT/nginx-proxy"
  mkdir -p "$PRUN/tmp"
  render "$HERE/nginx-proxy.conf.in" "$PRUN/nginx.conf" RUN="$PRUN" PORT="$NGINX_PROXY_PORT" \
    UPSTREAM_PORT="$UPSTREAM_PORT" WORKERS="$NGINX_PROXY_WORKERS"
  /usr/sbin/nginx -t -q -c "$PRUN/nginx.conf" -p "$PRUN" 2>"$PRUN/configtest.log" \
    || { cat "$PRUN/configtest.log" >&2; die "nginx proxy config test failed"; }
  /usr/sbin/nginx -c "$PRUN/nginx.conf" -p "$PRUN" </dev/null >"$PRUN/stdout.log" 2>&1 &
  NGINX_PROXY_PID=$!
  started "$NGINX_PROXY_PID" nginx-proxy
  wait_port "$NGINX_PROXY_PORT" 10 || { cat "$PRUN/error.log" >&2; die "nginx proxy did not come up"; }
  log "nginx as a plain proxy: pid $NGINX_PROXY_PID on $NGINX_PROXY"
fi

# ---- the test OP ------------------------------------------------------------------
# Its stdin is a FIFO whose only writer is this shell: if the bench dies in
# any way, the OP sees EOF and exits by itself. One client (sidegate) for both
# sidegates and mod_auth_openidc: each one's redirect URI is registered.
mkfifo "$OUT/op.stdin"
exec {OP_IN}<>"$OUT/op.stdin"
# OP_API: the client credentials grant and JWT access tokens for scenario j.
OP_API=1 OP_API_TOKEN_TTL=3600 \
OP_REDIRECT_URIS="$SG/.sidegate/oidc/callback $SGR/.sidegate/oidc/callback $OPENIDC$OPENIDC_CALLBACK" OP_PORT=0 \
  node "$ROOT/tests/idp/provider.mjs" <"$OUT/op.stdin" {OP_IN}>&- >"$OUT/op.stdout" 2>"$OUT/op.stderr" &
OP_PID=$!
started "$OP_PID" oidc-provider
wait_op_ready "$OP_PID"

# ---- the SAML IdP: SimpleSAMLphp under php -S ------------------------------------
# Configured from tests/saml-idp (users alice/alice-pw...); the SPs it knows come
# from bench/saml/saml20-sp-remote.php + sps.json. mod_auth_mellon's SP key and
# metadata are made first, the IdP needs its certificate.
if wants h; then
  MRUN="$OUT/apache-mellon"
  mkdir -p "$MRUN/mkmeta"
  (cd "$MRUN/mkmeta" && /usr/sbin/mellon_create_metadata "$MELLON/mellon/metadata" "$MELLON/mellon") \
    >"$MRUN/mkmeta.log" 2>&1 {OP_IN}>&- || { cat "$MRUN/mkmeta.log" >&2; die "mellon_create_metadata failed"; }
  mv "$MRUN"/mkmeta/*.key "$MRUN/sp.key"
  mv "$MRUN"/mkmeta/*.cert "$MRUN/sp.cert"
  mv "$MRUN"/mkmeta/*.xml "$MRUN/sp-metadata.xml"
  rmdir "$MRUN/mkmeta"
  # mellon reads its key in the workers, which run as www-data under root
  [[ $(id -u) -eq 0 ]] && { chgrp www-data "$MRUN/sp.key"; chmod 640 "$MRUN/sp.key"; }
fi
if ((NEED_SAML_IDP)); then
  IRUN="$OUT/saml-idp"
  mkdir -p "$IRUN"/{config,metadata,cert,log,data,tmp,sessions}
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=sidegate bench SAML IdP" \
    -keyout "$IRUN/cert/idp.key" -out "$IRUN/cert/idp.crt" >"$IRUN/log/openssl.log" 2>&1 {OP_IN}>&- \
    || { cat "$IRUN/log/openssl.log" >&2; die "openssl req failed"; }
  SAML_ENTITY_ID="$SAML_IDP/saml2/idp/metadata.php"
  render "$ROOT/tests/saml-idp/config.php.in" "$IRUN/config/config.php" BASE_URL="$SAML_IDP" DIR="$IRUN" \
    SECRET_SALT="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" SP_HOST="127.0.0.1:$SGS_PORT"
  render "$ROOT/tests/saml-idp/saml20-idp-hosted.php.in" "$IRUN/metadata/saml20-idp-hosted.php" ENTITY_ID="$SAML_ENTITY_ID"
  cp "$ROOT/tests/saml-idp/authsources.php" "$IRUN/config/"
  cp "$HERE/saml/saml20-sp-remote.php" "$IRUN/metadata/"
  # entity ID, ACS, SLO, signing certificate (the PEM's base64 body) of each SP
  sps=("$SGS/.sidegate/saml/metadata" "$SGS/.sidegate/saml/acs" "$SGS/.sidegate/saml/slo" "")
  wants h && sps+=("$MELLON/mellon/metadata" "$MELLON$MELLON_CALLBACK" "$MELLON/mellon/logout" \
                   "$(grep -v -- '-----' "$MRUN/sp.cert" | tr -d '\n')")
  "$PY" - "$IRUN/metadata/sps.json" "${sps[@]}" <<'PY'
import json, sys
a = sys.argv[2:]
sps = [dict(entity_id=a[i], acs_url=a[i + 1], slo_url=a[i + 2], cert_data=a[i + 3] or None)
       for i in range(0, len(a), 4)]
json.dump(sps, open(sys.argv[1], "w"), indent=1)
PY
  # no PHP_CLI_SERVER_WORKERS: one process, the logins are sequential
  (cd "$IRUN" && exec env -u PHP_CLI_SERVER_WORKERS SIMPLESAMLPHP_CONFIG_DIR="$IRUN/config" \
     php -d display_errors=0 -d log_errors=1 -d error_reporting='E_ALL & ~E_DEPRECATED & ~E_STRICT' \
       -S "127.0.0.1:$SAML_IDP_PORT" -t /usr/share/simplesamlphp/www) \
    </dev/null >"$IRUN/log/php.log" 2>&1 {OP_IN}>&- &
  SAML_IDP_PID=$!
  started "$SAML_IDP_PID" php-saml-idp
  wait_port "$SAML_IDP_PORT" 10 || { tail -20 "$IRUN/log/php.log" >&2; die "php -S (SAML IdP) did not come up"; }
  SAML_IDP_METADATA="$IRUN/idp-metadata.xml"
  code=$(curl -s -o "$SAML_IDP_METADATA" -w '%{http_code}' --max-time 10 "$SAML_ENTITY_ID") || code=000
  if [[ $code != 200 ]] || ! grep -q EntityDescriptor "$SAML_IDP_METADATA"; then
    tail -20 "$IRUN/log/php.log" "$IRUN/log/simplesamlphp.log" >&2
    die "the SAML IdP did not serve its metadata (HTTP $code)"
  fi
  log "SAML IdP (SimpleSAMLphp): pid $SAML_IDP_PID on $SAML_IDP"
fi

# ---- sidegate ---------------------------------------------------------------------
API_AUDIENCE=https://api.sidegate.test   # the test OP's JWT resource server (OP_API)
take_dump() {  # PID DIR DEST: callgrind writes the counts so far (and zeroes them) to DEST
  local dump
  callgrind_control --dump=order "$1" >/dev/null || die "callgrind dump of pid $1 failed"
  dump=$(find "$2" -maxdepth 1 -name 'callgrind.out.*' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
  [[ -n $dump ]] || die "no callgrind dump of pid $1 in $2"
  mv "$dump" "$3"
}
start_sidegate() {  # NAME PORT ADMIN_PORT oidc|saml|local [SESSION_TOML]: run dir $OUT/NAME; sets STARTED_PID
  local name=$1 port=$2 admin=$3 login=$4 session=${5:-} dir="$OUT/$1" login_toml i ready=0
  case $login in
    oidc)
      login_toml="$(oidc_toml "$dir")

[[bearer.issuers]]
issuer = \"$ISSUER\"
audience = \"$API_AUDIENCE\"" ;;
    saml)
      login_toml="[saml]
idp_metadata_file = \"$SAML_IDP_METADATA\"" ;;
    local)
      local_account "$OUT/users.toml"
      login_toml="[local]
users_file = \"$OUT/users.toml\"" ;;
  esac
  sidegate_config "$dir" "$port" "$admin" "$login_toml" "$session"
  local wrap=() up=20
  # callgrind, counting nothing until count_scenario turns it on (start-up and login are not
  # counted); ORDER counts start-up and keeps symbol names as the linker knows them
  local atstart=no demangle=yes
  ((ORDER)) && { atstart=yes demangle=no; }
  ((INSTRUCTIONS > 0)) && { wrap=(valgrind --tool=callgrind "--instr-atstart=$atstart" "--demangle=$demangle" \
    --vgdb=yes --callgrind-out-file="$dir/callgrind.out"); up=120; }
  "${wrap[@]}" "$SIDEGATE" run --config "$dir/sidegate.toml" </dev/null {OP_IN}>&- >"$dir/stdout.log" 2>"$dir/stderr.log" &
  STARTED_PID=$!
  started "$STARTED_PID" "$name"
  wait_port "$port" "$up" || { tail -20 "$dir/stderr.log" >&2; die "$name did not listen on $port"; }
  for ((i = 0; i < 60; i++)); do   # 30 s
    [[ $(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:$admin/readyz") == 200 ]] && { ready=1; break; }
    proc_alive "$STARTED_PID" || { tail -20 "$dir/stderr.log" >&2; die "$name exited"; }
    sleep 0.5
  done
  ((ready)) || log "WARNING: $name's /readyz did not answer 200 in 30 s; going on, the probes will tell"
  log "$name: pid $STARTED_PID on http://127.0.0.1:$port (admin 127.0.0.1:$admin)"
  if ((ORDER)); then  # start-up apart
    take_dump "$STARTED_PID" "$dir" "$OUT/startup-$name.callgrind"
  fi
}
start_sidegate sidegate "$SG_PORT" "$SG_ADMIN_PORT" oidc
SG_PID=$STARTED_PID
if ((ORDER)); then  # the other login kinds' start-up, for the symbol order only
  start_sidegate sidegate-saml "$SGS_PORT" "$SGS_ADMIN_PORT" saml
  start_sidegate sidegate-local "$SGL_PORT" "$SGL_ADMIN_PORT" local
  # the local sign-in (form, password check, new session) apart
  timeout -k 5 300 "$PY" "$HERE/local-signin.py" "http://127.0.0.1:$SGL_PORT" 20 1 /dev/null {OP_IN}>&- \
    || die "local sign-ins under callgrind failed"
  take_dump "$STARTED_PID" "$OUT/sidegate-local" "$OUT/login-local.callgrind"
  # many sessions used in turn, as bench/memory.sh does: cookie opens past the opened-session
  # cache's budget, signing, and the caches' upkeep with hundreds of entries
  timeout -k 5 300 "$PY" "$HERE/local-signin.py" "http://127.0.0.1:$SGL_PORT" 400 2 "$OUT/local-cookies.txt" \
    {OP_IN}>&- || die "400 local sign-ins under callgrind failed"
  timeout -k 5 60 wrk -t2 -c16 -d5s --timeout 10s -s "$HERE/wrk-cookies.lua" "http://127.0.0.1:$SGL_PORT/" \
    -- "$OUT/local-cookies.txt" >"$OUT/many-local.wrk" 2>&1 {OP_IN}>&- \
    || die "wrk over 400 sessions under callgrind failed"
  take_dump "$STARTED_PID" "$OUT/sidegate-local" "$OUT/many-local.callgrind"
fi

# ---- i: Redis, and a sidegate keeping its sessions there ---------------------------
if wants i; then
  RRUN="$OUT/redis"
  mkdir -p "$RRUN"
  /usr/bin/redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$RRUN" \
    </dev/null >"$RRUN/redis.log" 2>&1 {OP_IN}>&- &
  REDIS_PID=$!
  started "$REDIS_PID" redis-server
  wait_port "$REDIS_PORT" 10 || { tail -20 "$RRUN/redis.log" >&2; die "redis-server did not come up"; }
  log "redis-server: pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"
  start_sidegate sidegate-redis "$SGR_PORT" "$SGR_ADMIN_PORT" oidc "store = \"redis\"

[session.redis]
url = \"redis://127.0.0.1:$REDIS_PORT\"
"
  SGR_PID=$STARTED_PID
fi

# ---- f, g, h: Apache ---------------------------------------------------------------
APACHE_THREADS=$((CONNS > 64 ? CONNS : 64))
start_apache() {  # NAME PORT [NAME=VALUE...]: bench/apache/NAME.conf.in in $OUT/apache-NAME; sets STARTED_PID
  local name=$1 port=$2 dir="$OUT/apache-$1"
  shift 2
  mkdir -p "$dir"
  chmod 755 "$dir"
  render "$HERE/apache/common.conf.in" "$dir/common.conf" RUN="$dir" PORT="$port" UPSTREAM_PORT="$UPSTREAM_PORT" \
    THREADS="$APACHE_THREADS" MIN_SPARE=$((APACHE_THREADS / 2)) MAX_WORKERS=$((APACHE_THREADS * 4))
  (umask 077; render "$HERE/apache/$name.conf.in" "$dir/httpd.conf" RUN="$dir" PORT="$port" "$@")
  /usr/sbin/apache2 -d "$dir" -f "$dir/httpd.conf" -t >"$dir/configtest.log" 2>&1 {OP_IN}>&- \
    || { cat "$dir/configtest.log" >&2; die "apache-$name: config test failed"; }
  /usr/sbin/apache2 -d "$dir" -f "$dir/httpd.conf" -DFOREGROUND </dev/null >"$dir/stdout.log" 2>&1 {OP_IN}>&- &
  STARTED_PID=$!
  started "$STARTED_PID" "apache-$name"
  wait_port "$port" 15 || { tail -20 "$dir/error.log" "$dir/stdout.log" >&2; die "apache-$name did not come up"; }
  log "apache-$name: pid $STARTED_PID on http://127.0.0.1:$port"
}
if wants f; then
  start_apache plain "$APACHE_PORT"
  APACHE_PID=$STARTED_PID
fi
if wants g; then
  # fresh per run: the sessions live in Apache's shared memory and die with it
  start_apache openidc "$OPENIDC_PORT" ISSUER="$ISSUER" PASSPHRASE="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
  OPENIDC_PID=$STARTED_PID
fi
if wants h; then
  cp "$SAML_IDP_METADATA" "$OUT/apache-mellon/idp-metadata.xml"
  start_apache mellon "$MELLON_PORT"
  MELLON_PID=$STARTED_PID
fi

# ---- measurement helpers ----------------------------------------------------------
group_pids() { echo "$1"; pgrep -P "$1" || true; }   # nginx: master + workers
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

# Every request looks like a browser navigation: sidegate answers an
# unauthenticated request that does not accept text/html with 401, not 302.
BROWSER_HDR=(-H "Accept: text/html,application/xhtml+xml,*/*;q=0.8" -H "User-Agent: sidegate-bench/1.0")

count_scenario() {  # ROUND ID URL EXPECT SUT_PID SUT_NAME [extra header args]: callgrind counts
  local round=$1 id=$2 url=$3 expect=$4 sut=$5 sutname=$6; shift 6
  local hdr=("${BROWSER_HDR[@]}" "$@") tag="r${round}-${id}" ir
  proc_alive "$sut" || die "$tag: $sutname (pid $sut) is not running"
  requests() { timeout -k 5 600 "$PY" - "$1" "$url" "$expect" "${hdr[@]}" {OP_IN}>&- <<'PY'
import http.client, sys, urllib.parse
n, url, expect, args = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
u = urllib.parse.urlsplit(url)
headers = dict(a.split(": ", 1) for a in args[1::2])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
for i in range(n):
    c.request("GET", u.path or "/", headers=headers)
    r = c.getresponse(); r.read()
    if r.status != expect:
        sys.exit(f"request {i + 1}: {r.status}, expected {expect}")
PY
  }
  requests 200 || die "$tag: the uncounted requests failed"
  if ((ORDER)); then   # counting all along: the warm-up (and the login before it) apart
    take_dump "$sut" "$OUT/$sutname" "$OUT/warm-$tag.callgrind"
  elif ! { callgrind_control -z "$sut" && callgrind_control -i on "$sut"; } >/dev/null; then
    die "$tag: callgrind_control could not reach pid $sut"
  fi
  requests "$INSTRUCTIONS" || die "$tag: the counted requests failed"
  ((ORDER)) || callgrind_control -i off "$sut" >/dev/null
  take_dump "$sut" "$OUT/$sutname" "$OUT/$tag.callgrind"
  if ((ORDER)); then   # what only concurrent connections run (accept, parking, stealing)
    timeout -k 5 60 wrk -t2 -c16 -d3s "${hdr[@]}" "$url" >"$OUT/load-$tag.wrk" 2>&1 {OP_IN}>&- \
      || die "$tag: wrk under callgrind failed"
    take_dump "$sut" "$OUT/$sutname" "$OUT/load-$tag.callgrind"
  fi
  ir=$(awk '/^totals:/{print $2; exit}' "$OUT/$tag.callgrind")
  [[ -n $ir ]] || die "$tag: no instruction total in $OUT/$tag.callgrind"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$id" "$url" "$INSTRUCTIONS" "$ir" "$((ir / INSTRUCTIONS))" >>"$OUT/instructions.tsv"
  log "$tag: $((ir / INSTRUCTIONS)) instructions/request ($INSTRUCTIONS requests; profile $OUT/$tag.callgrind)"
}

printf 'round\tscenario\turl\texpect\tprobe_bytes\trequests\tduration_s\trps\tp50_us\tp90_us\tp99_us\tmax_us\terrors\tnon2xx3xx\tbytes_per_resp\tsut\trss_peak_kb\tcpu_us_per_req\taux\taux_cpu_us_per_req\n' >"$OUT/results.tsv"

# ROUND ID URL EXPECT_STATUS SUT_PID SUT_NAME [extra header args]
# With AUX_PID and AUX_NAME set (as in `AUX_PID=... AUX_NAME=... run_scenario ...`),
# the CPU time of that helper process (redis-server for i) is recorded apart.
run_scenario() {
  local round=$1 id=$2 url=$3 expect=$4 sut=$5 sutname=$6; shift 6
  local hdr=("${BROWSER_HDR[@]}" "$@") tag="r${round}-${id}" aux=${AUX_PID:-} auxname=${AUX_NAME:-}
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
  local c0 c1 a0=0 a1=0
  start_sampler "$sut" "$OUT/$tag.rss.txt"
  c0=$(group_ticks "$sut")
  [[ -n $aux ]] && a0=$(group_ticks "$aux")
  local sched_pid=""
  if [[ $SCHED == 1 ]]; then
    local groups=("$sutname=$sut")
    [[ $sut != "$NGINX_PID" ]] && groups+=("nginx=$NGINX_PID")
    "$PY" "$HERE/schedstat.py" $((DURATION / 4)) $((DURATION / 2)) "${groups[@]}" wrk=comm:wrk \
      >"$OUT/$tag.sched.txt" 2>&1 {OP_IN}>&- &
    sched_pid=$!
  fi
  local trace_pid=""
  if [[ $TRACE == 1 ]]; then
    (sleep $((DURATION / 2)); exec timeout -k 5 30 perf sched record -a -q -o "$OUT/$tag.perf.data" -- sleep 1) \
      >"$OUT/$tag.perf.log" 2>&1 {OP_IN}>&- &
    trace_pid=$!
  fi
  timeout -k 5 $((DURATION + 20)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 10s --latency \
      -s "$HERE/wrk-stats.lua" "${hdr[@]}" "$url" >"$OUT/$tag.wrk.txt" 2>&1 {OP_IN}>&- \
    || { stop_sampler; die "$tag: wrk failed or timed out: $(tail -3 "$OUT/$tag.wrk.txt")"; }
  c1=$(group_ticks "$sut")
  [[ -n $aux ]] && a1=$(group_ticks "$aux")
  stop_sampler
  [[ -n $sched_pid ]] && { wait "$sched_pid" || log "$tag: schedstat failed: $(tail -1 "$OUT/$tag.sched.txt")"; }
  if [[ -n $trace_pid ]]; then
    if wait "$trace_pid"; then
      perf sched timehist -i "$OUT/$tag.perf.data" 2>/dev/null | "$PY" "$HERE/schedtrace.py" >"$OUT/$tag.trace.txt" \
        || log "$tag: perf sched timehist failed"
      rm -f "$OUT/$tag.perf.data"
    else
      log "$tag: perf sched record failed: $(tail -1 "$OUT/$tag.perf.log")"
    fi
  fi
  local stats
  stats=$(grep '^STATS ' "$OUT/$tag.wrk.txt") || die "$tag: no STATS line in the wrk output"
  # the same request still answers the same way afterwards (session alive)
  pr=$(probe "$url" "${hdr[@]}")
  [[ ${pr% *} == "$expect" ]] || die "$tag: after the load $url answered ${pr% *}, expected $expect"
  # A first answer may carry a one-off header (mod_auth_openidc refreshes its cookie):
  # the responses must match the probe before or the one after the load.
  pbytes="$pbytes,${pr#* }"
  "$PY" - "$OUT/results.tsv" "$round" "$id" "$url" "$expect" "$pbytes" "$stats" "$OUT/$tag.rss.txt" \
      "$c0" "$c1" "$CLK_TCK" "$sutname" "$auxname" "$a0" "$a1" <<'PY'
import sys
out, rnd, sid, url, expect, pbytes, stats, rssf, c0, c1, tck, sutname, auxname, a0, a1 = sys.argv[1:]
kv = dict(x.split("=", 1) for x in stats.split()[1:])
req = int(kv["requests"])
if req == 0:
    sys.exit(f"r{rnd}-{sid}: wrk completed no request")
non2xx3xx = int(kv["err_status"])
errors = sum(int(kv[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout"))
bpr = int(kv["bytes"]) / req
# a 302 must not pass for a 200 (or the reverse): sizes must match a probe
probes = [int(p) for p in pbytes.split(",")]
if all(abs(bpr - p) > 0.05 * p for p in probes):
    sys.exit(f"r{rnd}-{sid}: wrk read {bpr:.1f} bytes/response, the probes {pbytes}: the responses differ")
pbytes = str(probes[0])
rss = max((int(l) for l in open(rssf) if l.strip().isdigit()), default=0)
cpu_us = 1e6 * (int(c1) - int(c0)) / int(tck) / req
aux_us = f"{1e6 * (int(a1) - int(a0)) / int(tck) / req:.1f}" if auxname else ""
row = [rnd, sid, url, expect, pbytes, req, kv["duration_s"], kv["rps"], kv["p50_us"], kv["p90_us"],
       kv["p99_us"], kv["max_us"], errors, non2xx3xx, f"{bpr:.1f}", sutname, rss, f"{cpu_us:.1f}", auxname, aux_us]
open(out, "a").write("\t".join(map(str, row)) + "\n")
if errors or non2xx3xx:
    print(f"WARNING r{rnd}-{sid}: {errors} socket errors, {non2xx3xx} non-2xx/3xx: {stats}", file=sys.stderr)
print(f"  -> {float(kv['rps']):9.0f} req/s  p50 {int(kv['p50_us'])/1000:.2f} ms  p99 {int(kv['p99_us'])/1000:.2f} ms  "
      f"{sutname} RSS peak {rss/1024:.1f} MiB  {cpu_us:.1f} us CPU/req"
      + (f" (+ {auxname} {aux_us})" if auxname else "") + f"  errors {errors}  non-2xx/3xx {non2xx3xx}",
      file=sys.stderr)
PY
  sleep "$PAUSE"
}

version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }   # PACKAGE
{
  echo "# sidegate bench $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "wrk -t$THREADS -c$CONNS -d${DURATION}s --latency (warm-up ${WARMUP}s), RUNS=$RUNS, SCENARIOS=$SCENARIOS"
  echo "nproc=$(nproc) kernel=$(uname -r) loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "sidegate: $("$SIDEGATE" --version 2>/dev/null | head -1 || echo unknown) git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
  echo "nginx-light $(version nginx-light) ($NGINX_WORKERS worker), wrk $(version wrk)"
  wants k && echo "nginx as a plain proxy (k): $NGINX_PROXY_WORKERS workers"
  echo "oidc-provider $(node -p "require('$ROOT/tests/idp/node_modules/oidc-provider/package.json').version"), node $(node --version)"
  if wants f || wants g || wants h; then
    echo "apache2 $(version apache2) (MPM event, 2 children x $APACHE_THREADS threads)," \
         "mod_auth_openidc $(version libapache2-mod-auth-openidc), mod_auth_mellon $(version libapache2-mod-auth-mellon)"
  fi
  ((NEED_SAML_IDP)) && echo "simplesamlphp $(version simplesamlphp), php $(version php8.2-cli)"
  wants i && echo "redis-server $(version redis-server)"
} >"$OUT/env.txt"

bearer_token() { # a JWT access token from the test OP (client credentials), printed
  timeout -k 5 30 "$PY" - "$OUT/op-ready.json" "$ISSUER" "$API_AUDIENCE" {OP_IN}>&- <<'PY' || die "could not get a bearer token from the test OP"
import json, sys, requests
ready, issuer, aud = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
api = ready["api"]
r = requests.post(f"{issuer}/token", auth=(api["client_id"], api["client_secret"]), timeout=20,
                  data={"grant_type": "client_credentials", "scope": api["scope"], "resource": aud})
token = r.json().get("access_token", "")
if r.status_code != 200 or token.count(".") != 2:
    sys.exit(f"token request: HTTP {r.status_code} {r.text[:300]}")
print(token)
PY
}
login() {        # NAME URL [login.py args]: prints the session Cookie header
  timeout -k 5 90 "$PY" "$HERE/login.py" "${@:3}" "$2" {OP_IN}>&- || die "$1: login.py failed (see the messages above)"
}
if ((INSTRUCTIONS > 0)); then
  printf 'round\tscenario\turl\trequests\tinstructions\tinstructions_per_request\n' >"$OUT/instructions.tsv"
  run_scenario() { count_scenario "$@"; }
fi
for ((r = 1; r <= RUNS; r++)); do
  log "=== round $r/$RUNS"
  COOKIE=$(login sidegate "$SG/")
  wants i && REDIS_COOKIE=$(login sidegate-redis "$SGR/")
  wants g && OPENIDC_COOKIE=$(login apache-openidc "$OPENIDC/" --callback "$OPENIDC_CALLBACK")
  wants h && MELLON_COOKIE=$(login apache-mellon "$MELLON/" --callback "$MELLON_CALLBACK")
  wants j && BEARER=$(bearer_token)
  for s in $SCENARIOS; do
    case $s in
      a) run_scenario "$r" a-upstream "$UP/" 200 "$NGINX_PID" nginx ;;
      b) run_scenario "$r" b-public "$SG/public/" 200 "$SG_PID" sidegate ;;
      c) run_scenario "$r" c-session "$SG/" 200 "$SG_PID" sidegate -H "Cookie: $COOKIE" ;;
      d) run_scenario "$r" d-redirect "$SG/" 302 "$SG_PID" sidegate ;;
      e) run_scenario "$r" e-auth "$SG/.sidegate/auth" 200 "$SG_PID" sidegate -H "Cookie: $COOKIE" -H "X-Original-URI: /reports?q=1" -H "X-Original-Method: GET" ;;
      f) run_scenario "$r" f-apache "$APACHE/" 200 "$APACHE_PID" apache-plain ;;
      g) run_scenario "$r" g-openidc "$OPENIDC/" 200 "$OPENIDC_PID" apache-openidc -H "Cookie: $OPENIDC_COOKIE" ;;
      h) run_scenario "$r" h-mellon "$MELLON/" 200 "$MELLON_PID" apache-mellon -H "Cookie: $MELLON_COOKIE" ;;
      i) AUX_PID=$REDIS_PID AUX_NAME=redis-server \
           run_scenario "$r" i-redis "$SGR/" 200 "$SGR_PID" sidegate-redis -H "Cookie: $REDIS_COOKIE" ;;
      j) run_scenario "$r" j-bearer "$SG/" 200 "$SG_PID" sidegate -H "Authorization: Bearer $BEARER" ;;
      k) run_scenario "$r" k-nginx-proxy "$NGINX_PROXY/" 200 "$NGINX_PROXY_PID" nginx-proxy ;;
    esac
  done
done

# full browser logins, bounded: wall time of the whole flow, one at a time; then how many
# complete per second with LOGIN_CLIENTS at once, and the CPU each costs the proxy and the IdP
time_logins() {  # NAME URL PROXY_PID IDP_PID [login.py args]: lines to logins.txt
  local name=$1 url=$2 proxy=$3 idp=$4 p0 p1 i0 i1 ok failed elapsed
  shift 4
  log "timing $LOGINS logins: $name"
  timeout -k 5 $((30 + 5 * LOGINS)) "$PY" - "$HERE" "$LOGINS" "$name" "$url" "$@" >>"$OUT/logins.txt" {OP_IN}>&- <<'PY' \
    || die "login timing failed: $name"
import statistics, sys, time
sys.path.insert(0, sys.argv[1])
from login import Flow, parse_args
n, name, url, extra = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
ms = []
for _ in range(n):
    t = time.perf_counter(); Flow(parse_args([url, *extra])).run(); ms.append(1000 * (time.perf_counter() - t))
print(f"login flow {name:<24} n={n} median {statistics.median(ms):6.1f} ms, min {min(ms):6.1f}, max {max(ms):6.1f}")
PY
  ((LOGIN_CLIENTS > 0)) || return 0
  log "logins per second, $LOGIN_CLIENTS clients for ${LOGIN_SECONDS}s: $name"
  p0=$(group_ticks "$proxy") i0=$(group_ticks "$idp")
  timeout -k 5 $((LOGIN_SECONDS + 90)) "$PY" - "$HERE" "$LOGIN_CLIENTS" "$LOGIN_SECONDS" "$url" "$@" \
    >"$OUT/login-rate.tmp" {OP_IN}>&- <<'PY' || die "login rate failed: $name"
import sys
sys.path.insert(0, sys.argv[1])
from login import rate
ok, failed, elapsed, err = rate(sys.argv[4:], int(sys.argv[2]), float(sys.argv[3]))
print(ok, failed, f"{elapsed:.3f}")
if failed:
    print(f"login rate: {failed} failed, the first: {err}", file=sys.stderr)
PY
  p1=$(group_ticks "$proxy") i1=$(group_ticks "$idp")
  read -r ok failed elapsed <"$OUT/login-rate.tmp"
  ((ok > 0)) || die "login rate: no login completed: $name"
  "$PY" - "$name" "$ok" "$failed" "$elapsed" "$((p1 - p0))" "$((i1 - i0))" "$CLK_TCK" "$LOGIN_CLIENTS" \
    >>"$OUT/logins.txt" <<'PY'
import sys
name, ok, failed, elapsed, proxy, idp, tck, clients = sys.argv[1:]
ok, elapsed, tck = int(ok), float(elapsed), int(tck)
per = lambda ticks: 1000 * int(ticks) / tck / ok
print(f"login rate {name:<24} {ok / elapsed:6.1f} logins/s ({ok} in {elapsed:.1f} s, {clients} clients, "
      f"{failed} failed); CPU per login: proxy {per(proxy):.2f} ms, IdP {per(idp):.2f} ms")
PY
}
if ((LOGINS > 0)); then
  : >"$OUT/logins.txt"
  time_logins "sidegate OIDC" "$SG/" "$SG_PID" "$OP_PID"
  # SAML through sidegate: a SAML-only sidegate, started for this (not under load before)
  start_sidegate sidegate-saml "$SGS_PORT" "$SGS_ADMIN_PORT" saml
  time_logins "sidegate SAML" "$SGS/" "$STARTED_PID" "$SAML_IDP_PID" --callback /.sidegate/saml/acs
  wants g && time_logins "apache mod_auth_openidc" "$OPENIDC/" "$OPENIDC_PID" "$OP_PID" --callback "$OPENIDC_CALLBACK"
  wants h && time_logins "apache mod_auth_mellon" "$MELLON/" "$MELLON_PID" "$SAML_IDP_PID" --callback "$MELLON_CALLBACK"
  echo "(alice, fresh client each: every redirect and form of the flow, incl. the cookie-only check;" \
    "the rate's clients are processes of their own; the SAML IdP is one php -S process)" >>"$OUT/logins.txt"
  cat "$OUT/logins.txt" >&2
fi
{
  echo "RSS idle after the load (kB, process + children):"
  echo "  sidegate $(group_rss "$SG_PID")"
  wants i && echo "  sidegate-redis $(group_rss "$SGR_PID"), redis-server $(group_rss "$REDIS_PID")"
  wants f && echo "  apache-plain $(group_rss "$APACHE_PID")"
  wants g && echo "  apache-openidc $(group_rss "$OPENIDC_PID")"
  wants h && echo "  apache-mellon $(group_rss "$MELLON_PID")"
  wants k && echo "  nginx-proxy $(group_rss "$NGINX_PROXY_PID")"
  echo "  nginx $(group_rss "$NGINX_PID")"
} >>"$OUT/env.txt"

if ((INSTRUCTIONS > 0)); then
  cat "$OUT/env.txt" >"$OUT/results.md"
  "$PY" - "$OUT/instructions.tsv" >>"$OUT/results.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("Instructions per request (callgrind, all of sidegate's threads; median over the rounds):\n")
print("| scenario | requests | instructions/request | per round |")
print("|---|---:|---:|---|")
for sid in dict.fromkeys(r["scenario"] for r in rows):
    rs = [r for r in rows if r["scenario"] == sid]
    per = [int(r["instructions_per_request"]) for r in rs]
    print(f"| {sid} | {rs[0]['requests']} | {statistics.median(per):,.0f} | {', '.join(f'{p:,}' for p in per)} |")
PY
  if ((ORDER)); then
    nm --defined-only "$SIDEGATE" | awk '$2 ~ /^[tTwW]$/ {print $3}' >"$OUT/text-symbols.txt"
    "$PY" - "$OUT" "$OUT/text-symbols.txt" "$HERE/symbol-order.txt" >>"$OUT/results.md" <<'PY'
import collections, glob, os, re, sys
out, known, dest = sys.argv[1], set(open(sys.argv[2]).read().split()), sys.argv[3]

def self_cost(path):  # function name -> its own instructions, from one callgrind dump
    names, cost, cur, skip = {}, collections.Counter(), None, False
    for line in open(path, errors="replace"):
        if skip:
            skip = False
            continue
        m = re.match(r"fn=\((\d+)\)(?: (\S+))?", line)
        if m:
            cur = names.setdefault(m.group(1), m.group(2))
        elif line.startswith("calls="):
            skip = True   # the next line is the call's inclusive cost
        elif cur and line[:1] in "0123456789+-*":
            cost[cur] += int(line.split()[-1])
        else:
            m = re.match(r"c?fn=\((\d+)\) (\S+)", line)
            if m:
                names.setdefault(m.group(1), m.group(2))
    return cost

dumps = {os.path.basename(p): self_cost(p) for p in glob.glob(os.path.join(out, "*.callgrind"))}
starts = [set(c) for name, c in dumps.items() if name.startswith("startup-")]
hot, ran = set(), collections.Counter()
for name, c in dumps.items():
    ran.update(c)
    if not name.startswith("startup-"):
        hot |= set(c)

# Pages are mapped 64 KiB around each first touch, so functions that run together sit
# together. Once ready, sidegate pages its code out (src/memory.rs) and what requests and
# logins run comes back: so first every function they run (most instructions first), then
# start-up's alone, those every start-up runs first, then by the set of start-ups that
# run them (what one configuration's start-up touches before the page-out stays close).
def place(n):
    if n in hot:
        return (0, (), -ran[n])
    runs_at = tuple(i for i, s in enumerate(starts) if n in s)
    return (1, (-len(runs_at), runs_at), -ran[n])

order = sorted((n for n in ran if n in known), key=place)
open(dest, "w").write("\n".join(order) + "\n")
print(f"\nSymbol order: {len(order)} functions ({len(hot & known)} on the request paths) "
      f"of {len(known)} in the binary -> {os.path.relpath(dest)}")
PY
  fi
  cat "$OUT/results.md"
  log "results: $OUT/results.md (profiles: callgrind_annotate $OUT/r1-c-session.callgrind)"
  exit 0
fi
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
def aux(sid):
    rs = [r for r in rows if r["scenario"] == sid and r["aux"]]
    return f"{rs[0]['aux']} {statistics.median(float(r['aux_cpu_us_per_req']) for r in rs):.1f}" if rs else ""
print("Medians over the rounds. RSS/CPU are the server under test's: nginx (master + workers) for a, Apache")
print("(parent + children) for f-h, sidegate otherwise; RSS summed over the processes (shared pages counted")
print("in each). 'other CPU' = a helper's CPU per request, apart (i: redis-server).")
print("errors = socket errors (connect/read/write/timeout); non-2xx/3xx = responses with status >= 400.")
print()
print("| scenario | status | req/s | vs a | vs b | p50 ms | p99 ms | errors | non-2xx/3xx | server | RSS peak MiB | CPU µs/req | other CPU µs/req |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
for sid in order:
    rs = [r for r in rows if r["scenario"] == sid]
    print(f"| {sid} | {rs[0]['expect']} | {med(sid, 'rps'):.0f} | {ratio(sid, 'a-')} | {ratio(sid, 'b-')} | "
          f"{med(sid, 'p50_us') / 1000:.2f} | {med(sid, 'p99_us') / 1000:.2f} | "
          f"{sum(int(r['errors']) for r in rs)} | {sum(int(r['non2xx3xx']) for r in rs)} | {rs[0]['sut']} | "
          f"{max(int(r['rss_peak_kb']) for r in rs) / 1024:.1f} | {med(sid, 'cpu_us_per_req'):.1f} | {aux(sid)} |")
print()
print("Per round:")
print()
print("| round | scenario | req/s | p50 ms | p99 ms | errors | non-2xx/3xx | RSS peak MiB | CPU µs/req | other CPU µs/req |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    print(f"| {r['round']} | {r['scenario']} | {float(r['rps']):.0f} | {int(r['p50_us']) / 1000:.2f} | "
          f"{int(r['p99_us']) / 1000:.2f} | {r['errors']} | {r['non2xx3xx']} | "
          f"{int(r['rss_peak_kb']) / 1024:.1f} | {r['cpu_us_per_req']} | "
          f"{(r['aux'] + ' ' + r['aux_cpu_us_per_req']) if r['aux'] else ''} |")
PY
cat "$OUT/results.md"
log "results: $OUT/results.md (raw: $OUT/*.wrk.txt, service logs: $OUT/*/, $OUT/op.stderr)"
