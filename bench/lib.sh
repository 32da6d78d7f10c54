# Sourced by bench/bench.sh, soak.sh and memory.sh: what they share, once. The caller sets ROOT
# and defines `log` and `die` first. Debian packages come through the project's own
# `apt_ensure` (scripts/lib/deps.sh: idempotent, no service started, one log).
# shellcheck shell=bash

# shellcheck source=../scripts/lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"

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

group_ticks() {  # utime+stime of a process and its children, clock ticks
  local t=0 p v
  for p in $(group_pids "$1"); do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || continue
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

probe() {        # URL [curl args]: "status response_bytes"
  local url=$1; shift
  curl -s -o /dev/null --max-time 5 "$@" -w '%{http_code} %{size_header} %{size_download}' "$url" \
    | awk '{print $1, $2 + $3}'
}

raise_nofile() { # CONNS: an open-files limit for this shell and what it starts (wrk, nginx and
  # sidegate inherit it): 65536, or the hard limit when that is lower but enough (a client
  # and an upstream socket per connection in the proxy, one in wrk).
  local want=65536 need=$(($1 * 3 + 1024)) hard
  ulimit -n "$want" 2>/dev/null && return 0
  hard=$(ulimit -Hn)
  if [[ $hard == unlimited ]] || ((hard >= need)); then
    ulimit -n "$hard" || die "cannot set the open-files limit to its hard limit $hard"
    log "open-files limit: $want not permitted, using the hard limit $hard (>= $need needed)"
  else
    die "cannot raise the open-files limit to $want (hard limit $hard, $need needed for $1 connections):" \
        "run as root, raise the hard limit (ulimit -Hn / LimitNOFILE) or lower CONNS"
  fi
}

release_binary() { # sets SIDEGATE: $SIDEGATE_BIN, or target/release/sidegate built first
  # (unless SKIP_BUILD=1)
  SIDEGATE="${SIDEGATE_BIN:-$ROOT/target/release/sidegate}"
  if [[ -z ${SIDEGATE_BIN:-} && ${SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release --locked"
    cargo build --release --locked
  fi
  [[ -x $SIDEGATE ]] || die "$SIDEGATE not found (build it: cargo build --release)"
}

stop_pid() {     # PID NAME (empty: nothing): TERM, wait up to 5 s, then KILL; then its children (Apache's)
  local pid=$1 name=$2 kids c i
  [[ -n $pid ]] || return 0
  proc_alive "$pid" || return 0
  kids=$(pgrep -P "$pid" || true)
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do proc_alive "$pid" || break; sleep 0.1; done
  if proc_alive "$pid"; then log "$name (pid $pid) ignored TERM, sending KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  # a parent stops its children as it exits; any left after 2 s are killed by pid
  for c in $kids; do
    for ((i = 0; i < 20; i++)); do proc_alive "$c" || break; sleep 0.1; done
    proc_alive "$c" && { log "$name: child $c still running, sending KILL"; kill -KILL "$c" 2>/dev/null; }
  done
  return 0
}

op_tools() {     # sets PY: node for the test OP, a Python with requests (login.py), and the
  # test dependencies (tests/idp/node_modules) from the project's own script
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
  "$ROOT/scripts/test-deps.sh"   # tests/idp/node_modules (and the test packages)
}

wait_op_ready() { # PID: until the test OP ($OUT/op.stdout) prints READY (60 s at most; it once
  # took over 20 s right after a clean build); sets ISSUER, keeps the line in op-ready.json
  local line i
  ISSUER=
  for ((i = 0; i < 600; i++)); do
    line=$(head -n1 "$OUT/op.stdout" 2>/dev/null || true)
    if [[ $line == READY\ * ]]; then
      ISSUER=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["issuer"])' "${line#READY }") \
        || die "bad READY line: $line"
      printf '%s\n' "${line#READY }" >"$OUT/op-ready.json"
      break
    fi
    proc_alive "$1" || { cat "$OUT/op.stderr" >&2; die "the test OP exited"; }
    sleep 0.1
  done
  [[ -n $ISSUER ]] || { cat "$OUT/op.stderr" >&2; die "the test OP printed no READY line in 60 s"; }
  log "test OP: pid $1, issuer $ISSUER"
}

oidc_toml() {    # DIR: prints the [oidc] block for the test OP's client `sidegate` at $ISSUER
  # (its secret written to DIR/client-secret)
  mkdir -p "$1"
  (umask 077; printf 'sidegate-secret' >"$1/client-secret")
  printf '[oidc]\nissuer = "%s"\nclient_id = "sidegate"\nclient_secret_file = "%s"\n' "$ISSUER" "$1/client-secret"
  printf 'scopes = ["openid", "email", "profile", "roles"]\n'
}

local_account() { # FILE: a users file with one local account, bench / bench-pw (bcrypt cost 4,
  # so a sign-in costs about a millisecond); needs htpasswd (apache2-utils)
  local hash
  hash=$(htpasswd -nbB -C 4 bench bench-pw | cut -d: -f2-)
  [[ $hash == \$2* ]] || die "htpasswd did not make a bcrypt hash"
  printf '[[users]]\nname = "bench"\npassword_hash = "%s"\nrole = "viewer"\nteams = ["bench"]\nemail = "bench@example.test"\n' \
    "$hash" >"$1"
}

sidegate_config() { # DIR PORT ADMIN_PORT LOGIN_TOML [SESSION_TOML]: keys and sidegate.toml in
  # DIR (0700); the configuration every bench script measures: upstream $UP, /public/ public,
  # no per-client login cap (one address logs in), room for many connections
  local dir=$1
  mkdir -p "$dir"
  chmod 700 "$dir"
  "$SIDEGATE" keys generate --out-dir "$dir" >"$dir/keys.log" 2>&1 \
    || { cat "$dir/keys.log" >&2; die "$dir: sidegate keys generate failed"; }
  [[ -s $dir/cookie-secrets && -s $dir/assertion-key.pem ]] \
    || die "$dir: sidegate keys generate did not write cookie-secrets and assertion-key.pem"
  cat >"$dir/sidegate.toml" <<TOML
[server]
listen = ["127.0.0.1:$2"]
admin_listen = "127.0.0.1:$3"
public_url = "http://127.0.0.1:$2"
trusted_proxies = ["127.0.0.1/32"]
login_rate_per_minute = 0
max_connections = 20000

[upstream]
url = "$UP"

$4

[session]
secrets_file = "$dir/cookie-secrets"
cookie_secure = false
${5:-}

[assertion]
signing_keys_file = "$dir/assertion-key.pem"

[identity]
roles = ["admin", "developer", "viewer"]
default_role = "viewer"

[access]
public_paths = ["/public/"]
TOML
}
