#!/usr/bin/env bash
# Runs sidegate locally in front of an echo app, logging in at the test OpenID provider
# (npm oidc-provider from tests/idp): users alice/alice-pw, bob/bob-pw, carol/carol-pw.
# Everything binds 127.0.0.1; state goes to .run/local. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN=.run/local
rm -rf "$RUN" && mkdir -p "$RUN"
PORT=${PORT:-4180}
command -v node >/dev/null || { echo "node is required" >&2; exit 1; }
log() { printf '[local] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
ROOT=$PWD
# shellcheck source=../scripts/lib/deps.sh
source scripts/lib/deps.sh
apt_ensure "${BUILD_PACKAGES[@]}"
[[ -f tests/idp/node_modules/oidc-provider/package.json ]] || (cd tests/idp && npm ci --no-audit --no-fund --loglevel=error)
cargo build --release --quiet
target/release/sidegate keys generate --out-dir "$RUN" 2>/dev/null
echo sidegate-secret >"$RUN/client-secret"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
# Echo app: prints the identity headers it receives.
python3 - "$RUN/upstream.port" <<'PY' &
import http.server, json, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k: v for k, v in self.headers.items() if k.lower().startswith("x-sidegate")}, indent=2).encode()
        self.send_response(200); self.send_header("content-type", "application/json"); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
s = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1])); s.serve_forever()
PY
pids+=($!)
mkfifo "$RUN/op.stdin"
OP_REDIRECT_URIS="http://127.0.0.1:$PORT/.sidegate/oidc/callback" node tests/idp/provider.mjs <"$RUN/op.stdin" >"$RUN/op.out" &
pids+=($!)
exec 9>"$RUN/op.stdin"
for _ in $(seq 100); do grep -q READY "$RUN/op.out" 2>/dev/null && [[ -s $RUN/upstream.port ]] && break; sleep 0.1; done
ISSUER=$(sed -n 's/^READY {"issuer":"\(.*\)"}$/\1/p' "$RUN/op.out")
cat >"$RUN/sidegate.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
admin_listen = "127.0.0.1:$((PORT + 5000))"
public_url = "http://127.0.0.1:$PORT"
[upstream]
url = "http://127.0.0.1:$(cat "$RUN/upstream.port")"
[oidc]
issuer = "$ISSUER"
client_id = "sidegate"
client_secret_file = "client-secret"
scopes = ["openid", "email", "profile", "roles"]
[session]
secrets_file = "cookie-secrets"
cookie_secure = false
[assertion]
signing_keys_file = "assertion-key.pem"
[identity]
roles = ["admin", "developer", "viewer"]
default_role = "viewer"
TOML
echo "open http://127.0.0.1:$PORT/ and log in as alice / alice-pw (or bob, carol)"
target/release/sidegate run --config "$RUN/sidegate.toml"
