#!/usr/bin/env bash
# The README's first command: installs the Debian packages sidegate needs to
# build (once; see scripts/lib/deps.sh), then runs `sidegate dev`: sidegate on
# http://127.0.0.1:4180 with an embedded development IdP and an echo app.
# Arguments go to `sidegate dev` (--port, --upstream URL, --protocol).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[dev] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib/deps.sh
source "$ROOT/scripts/lib/deps.sh"

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust from https://rustup.rs"
apt_ensure "${BUILD_PACKAGES[@]}"
cd "$ROOT"
exec cargo run --release --locked -- dev "$@"
