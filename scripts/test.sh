#!/usr/bin/env bash
# sidegate's test command: installs the test dependencies, runs every Rust
# test (unit + integration against the real test OP in tests/idp), then
# checks the dependency tree and formatting.
#   scripts/test.sh                 everything
#   scripts/test.sh -- some_filter  extra args go to `cargo test`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[test] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

scripts/test-deps.sh

log "cargo test --locked --all-targets $*"
cargo test --locked --all-targets "$@"

# Exactly one crypto provider: rustls must not pull in ring next to aws-lc-rs.
# With ring absent, `cargo tree -i ring` prints nothing on stdout (only a
# warning or "did not match" on stderr).
log "checking that ring is not in the dependency tree"
ring_tree=$(cargo tree --locked -e normal -i ring 2>/dev/null || true)
if grep -q '^ring v' <<<"$ring_tree"; then
  printf '%s\n' "$ring_tree" >&2
  die "ring is in the dependency tree: keep exactly one crypto provider (aws-lc-rs)"
fi

if cargo fmt --version >/dev/null 2>&1; then
  log "cargo fmt --all -- --check"
  cargo fmt --all -- --check || die "code is not formatted: run 'cargo fmt --all'"
else
  log "rustfmt not installed, skipping the format check"
fi
log "all checks passed"
