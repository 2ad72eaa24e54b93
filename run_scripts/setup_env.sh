#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) from requirements.lock.
# Idempotent: when the lock and setup.py are unchanged since the last install it returns at once.
# Every package is installed with --no-deps from exact pins, so no step can pull another torch.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
py=${PYTHON:-python3.11}
command -v "$py" >/dev/null 2>&1 || py=python3

stamp="$venv/.evlgen-installed"
want=$(cat "$root/requirements.lock" "$root/setup.py" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  echo "[setup] .venv is up to date"
else
  echo "[setup] installing pinned packages into $venv (about 90 s from the package mirrors)"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  log="$venv/pip-install.log"
  if ! "$venv/bin/pip" install -q --no-deps -r "$root/requirements.lock" >"$log" 2>&1 ||
     ! "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$root" >>"$log" 2>&1; then
    grep -v "is ignored" "$log" >&2
    echo "[setup] pip install failed (full log: $log)" >&2
    exit 1
  fi
  "$venv/bin/python" -c "import lavis_evlgen" >/dev/null
  echo "$want" > "$stamp"
fi

# pycocoevalcap's PTB tokenizer and METEOR run on Java.
if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Java for pycocoevalcap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
  else
    echo "[setup] WARNING: java not found; caption metrics (pycocoevalcap) need it" >&2
  fi
fi
