# Sourced by scripts/*.sh: `python_venv_ensure` makes the Python environment of the
# verifier examples (examples/python) at $ROOT/.run/py: a venv from `python3 -m venv`
# (Debian's python3-venv is installed with apt_ensure when venv or ensurepip is missing),
# then `pip install -r examples/python/requirements.txt` (every package pinned), redone only
# when requirements.txt is newer than the last successful install.
# Needs `log`, `die`, ROOT and apt_ensure (scripts/lib/deps.sh). Logs to .run/deps/pip.log.

# The pinned set (FastAPI, Starlette, pycparser) needs Python 3.11 or newer: Debian 12 has it.
PY_VENV_MIN_MINOR=11

python_venv_ensure() {
  local venv="$ROOT/.run/py" req="$ROOT/examples/python/requirements.txt"
  local marker="$ROOT/.run/py/.requirements-installed" pip_log="$ROOT/.run/deps/pip.log"
  mkdir -p "$ROOT/.run/deps"
  [[ -f $req ]] || die "missing $req"
  command -v python3 >/dev/null 2>&1 || apt_ensure python3
  python3 -c "import sys; sys.exit(0 if sys.version_info >= (3, $PY_VENV_MIN_MINOR) else 1)" \
    || die "python3 is $(python3 --version 2>&1); the examples need Python >= 3.$PY_VENV_MIN_MINOR"

  # A venv whose interpreter no longer runs (python3 upgraded or removed) is made anew.
  if [[ -d $venv ]] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "the venv at .run/py is broken, recreating it"
    rm -rf "$venv"
  fi
  if [[ ! -x $venv/bin/pip ]]; then
    rm -rf "$venv"
    log "python3 -m venv .run/py ($(python3 --version 2>&1))"
    if ! python3 -m venv "$venv" >"$pip_log" 2>&1; then
      # Debian's own python3 ships venv/ensurepip separately; a half-made venv is removed.
      rm -rf "$venv"
      log "python3 -m venv failed ($(tail -1 "$pip_log")); installing python3-venv"
      apt_ensure python3-venv
      python3 -m venv "$venv" >"$pip_log" 2>&1 \
        || die "python3 -m venv failed even with python3-venv, see $pip_log: $(tail -5 "$pip_log")"
    fi
    [[ -x $venv/bin/pip ]] || die "the venv at $venv has no pip (see $pip_log)"
  fi

  if [[ -f $marker && ! $req -nt $marker ]]; then
    log ".run/py up to date"
    return 0
  fi
  log "pip install -r examples/python/requirements.txt into .run/py (log: $pip_log)"
  rm -f "$marker"
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
    -r "$req" >>"$pip_log" 2>&1 \
    || die "pip install failed, see $pip_log: $(tail -5 "$pip_log")"
  "$venv/bin/python" -c 'import jwt, cryptography, fastapi, httpx, uvicorn' >>"$pip_log" 2>&1 \
    || die "the example packages do not import after pip install, see $pip_log"
  touch "$marker"
}
