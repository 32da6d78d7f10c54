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
# `cargo tree -i ring` fails with "did not match any packages" when ring is
# absent, which is the good case.
log "checking that ring is not in the dependency tree"
set +e
ring_tree=$(cargo tree --locked -e normal -i ring 2>&1)
ring_rc=$?
set -e
if ((ring_rc == 0)); then
  if [[ -n $ring_tree ]]; then
    printf '%s\n' "$ring_tree" >&2
    die "ring is in the dependency tree: keep exactly one crypto provider (aws-lc-rs)"
  fi
elif ! grep -q 'did not match any packages' <<<"$ring_tree"; then
  printf '%s\n' "$ring_tree" >&2
  die "cargo tree failed"
fi

if cargo fmt --version >/dev/null 2>&1; then
  log "cargo fmt --all -- --check"
  cargo fmt --all -- --check || die "code is not formatted: run 'cargo fmt --all'"
else
  log "rustfmt not installed, skipping the format check"
fi
log "all checks passed"
