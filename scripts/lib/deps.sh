# Sourced by scripts/*.sh: `apt_ensure PKG...` installs the Debian packages that
# are missing, idempotently (dpkg -s first), as root, without starting any
# service (policy-rc.d), refreshing stale package lists once on failure.
# Needs `log`, `die` and ROOT set by the caller. Logs to .run/deps/apt.log.

apt_ensure() {
  local log_dir="$ROOT/.run/deps" apt_log missing=() p
  mkdir -p "$log_dir"
  apt_log="$log_dir/apt.log"
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "Debian packages present: $*"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"
  [[ $(id -u) -eq 0 ]] || die "missing Debian packages (${missing[*]}) and not root: run as root, or: sudo apt-get install --no-install-recommends ${missing[*]}"
  log "installing Debian packages: ${missing[*]} (log: $apt_log)"
  : >"$apt_log"
  local policy=/usr/sbin/policy-rc.d made_policy=0
  # Keep the packages' postinst from starting system nginx/redis/apache: the
  # tests start their own instances on ephemeral loopback ports.
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    made_policy=1
  fi
  _apt() { DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$apt_log" 2>&1; }
  local ok=1
  # A fresh image may have empty package lists: update first then; otherwise
  # only when the first attempt fails (stale lists).
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    log "apt-get update"
    _apt update || ok=0
  fi
  if ((ok)) && ! _apt install -y --no-install-recommends "${missing[@]}"; then
    log "apt-get install failed, refreshing the package lists and retrying"
    _apt update && _apt install -y --no-install-recommends "${missing[@]}" || ok=0
  fi
  ((made_policy)) && rm -f "$policy"
  ((ok)) || die "apt-get install ${missing[*]} failed, see $apt_log: $(tail -5 "$apt_log")"
  for p in "${missing[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || die "package $p still not installed after apt-get install (see $apt_log)"
  done
  log "Debian packages installed"
}

# The Debian packages needed to *build* sidegate: samael's xmlsec feature needs
# the libxml2/xmlsec/OpenSSL headers and libclang for its bindgen step (without
# them: "Unable to find libclang", then "'stddef.h' file not found").
BUILD_PACKAGES=(
  pkg-config
  libssl-dev
  libxml2-dev
  libxmlsec1-dev
  libclang1-14
  libclang-common-14-dev
)
