#!/usr/bin/env bash
# Install what sidegate's test suite needs beyond Rust, idempotently, on a
# fresh Debian 12 machine (run as root; needs apt, Node 20 + npm):
#   - Debian packages: BUILD_PACKAGES (scripts/lib/deps.sh) and APT_PACKAGES
#     (skipped when `dpkg -s` finds them)
#   - tests/idp and tests/browser node_modules (npm ci, pinned lock files)
#   - the verifier examples: a Python venv at .run/py, examples/node node_modules
# Logs go to stderr; any failure exits non-zero with the reason.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# shellcheck source=lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"
# shellcheck source=lib/python.sh
source "$ROOT/scripts/lib/python.sh" # verifier examples (examples/python)

# What the tests need beyond building, easy to extend as suites arrive.
APT_PACKAGES=(
  curl
  ca-certificates
  # The first-run browser test (tests/browser).
  chromium
  # nginx: the auth_request tests; listed before simplesamlphp so it satisfies
  # simplesamlphp's `apache2 | httpd` dependency instead of apache2.
  nginx-light
  # The SAML IdP (tests/saml-idp): simplesamlphp under `php -S` (php8.2-cli is
  # only Recommended by it), php8.2-xml for DOM, openssl for its key; php8.2-cgi
  # satisfies php8.2's SAPI dependency without mod_php and Apache.
  openssl
  php8.2-cli
  php8.2-cgi
  php8.2-xml
  simplesamlphp
  # The shared session store tests: redis-server (standalone, Sentinel and
  # Cluster are all run from its binary; Debian builds it with TLS).
  redis-server
  redis-tools
)

log() { printf '[test-deps] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

LOG_DIR="$ROOT/.run/deps"
mkdir -p "$LOG_DIR"

# ---- Debian packages ----------------------------------------------------------
apt_ensure "${BUILD_PACKAGES[@]}" "${APT_PACKAGES[@]}"

# ---- npm packages (pinned): the test OpenID Provider, the browser driver --------
command -v node >/dev/null 2>&1 || die "node not found (Node.js >= 20 needed for tests/idp and tests/browser)"
command -v npm >/dev/null 2>&1 || die "npm not found (needed to install tests/idp and tests/browser)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || die "Node.js $(node --version) is too old: the test tools need >= 20"

# npm_ci DIR MARKER_PACKAGE: `npm ci` in DIR unless node_modules is newer than the lock.
npm_ci() {
  local dir="$ROOT/$1" marker="$ROOT/$1/node_modules/$2/package.json" name
  name=$(basename "$1")
  [[ -f $dir/package-lock.json ]] || die "missing $dir/package-lock.json"
  if [[ ! -f $marker || $dir/package-lock.json -nt $marker ]]; then
    log "npm ci in $1"
    (cd "$dir" && npm ci --no-audit --no-fund >"$LOG_DIR/npm-$name.log" 2>&1) \
      || die "npm ci in $1 failed, see $LOG_DIR/npm-$name.log: $(tail -5 "$LOG_DIR/npm-$name.log")"
    [[ -f $marker ]] || die "npm ci finished but $marker is missing"
    # npm ci keeps the files' own mtimes: mark the install as newer than the lock
    touch "$marker"
  else
    log "$1/node_modules up to date"
  fi
}
npm_ci tests/idp oidc-provider
npm_ci tests/browser playwright-core

# ---- verifier examples (examples/, tests/it/examples.rs) ------------------------
# Python: a venv at .run/py with examples/python/requirements.txt (scripts/lib/python.sh);
# Node: examples/node's pinned jose.
python_venv_ensure
npm_ci examples/node jose
# ---- end of verifier examples ----------------------------------------------------

[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium is missing after installing the chromium package"
log "ok"
