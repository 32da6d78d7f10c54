#!/usr/bin/env bash
# Install what sidegate's test suite needs beyond Rust, idempotently, on a
# fresh Debian 12 machine (run as root; needs apt, Node 20 + npm):
#   - Debian packages in APT_PACKAGES (skipped when `dpkg -s` finds them)
#   - tests/idp/node_modules (npm ci, from the pinned package-lock.json)
# Logs go to stderr; any failure exits non-zero with the reason.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# One list, easy to extend as suites arrive (SAML: libxml2-dev libxmlsec1-dev
# libclang1-14 libclang-common-14-dev; auth_request: nginx-light; stores:
# redis-server). chromium: the first-run browser test (tests/browser).
APT_PACKAGES=(
  pkg-config
  curl
  ca-certificates
  chromium
)

log() { printf '[test-deps] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

LOG_DIR="$ROOT/.run/test-deps"
mkdir -p "$LOG_DIR"
APT_LOG="$LOG_DIR/apt.log"

# ---- Debian packages ----------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

POLICY=/usr/sbin/policy-rc.d
made_policy=0
cleanup_policy() { if ((made_policy)); then rm -f "$POLICY"; made_policy=0; fi; }
trap cleanup_policy EXIT

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$APT_LOG" 2>&1
}
apt_update() {
  log "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get update >>"$APT_LOG" 2>&1
}

if ((${#missing[@]})); then
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"
  [[ $(id -u) -eq 0 ]] || die "missing packages (${missing[*]}) and not root: run as root or install them"
  log "installing Debian packages: ${missing[*]} (log: $APT_LOG)"
  : >"$APT_LOG"
  # Keep the packages' postinst from starting system nginx/redis: the tests
  # start their own instances on ephemeral loopback ports.
  if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod +x "$POLICY"
    made_policy=1
  fi
  # A fresh image may have empty package lists: update first then; otherwise
  # only when the first attempt fails (stale lists).
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    apt_update || die "apt-get update failed, see $APT_LOG: $(tail -3 "$APT_LOG")"
  fi
  if ! apt_install; then
    log "apt-get install failed, refreshing the package lists and retrying"
    apt_update || die "apt-get update failed, see $APT_LOG: $(tail -3 "$APT_LOG")"
    apt_install || die "apt-get install ${missing[*]} failed, see $APT_LOG: $(tail -5 "$APT_LOG")"
  fi
  cleanup_policy
  for p in "${missing[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || die "package $p still not installed after apt-get install (see $APT_LOG)"
  done
  log "Debian packages installed"
else
  log "Debian packages present: ${APT_PACKAGES[*]}"
fi

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
[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium is missing after installing the chromium package"
log "ok"
