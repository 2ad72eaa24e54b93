#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) from requirements.lock (plus
# requirements-gpu.lock on a machine with an NVIDIA driver, or when EVLGEN_GPU=1).
# Idempotent: when the locks and pyproject.toml are unchanged since the last install it returns at once.
# Every package is installed with --no-deps from exact pins, so no step can pull another torch.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
py=${PYTHON:-python3.11}
command -v "$py" >/dev/null 2>&1 || py=python3

locks=("$root/requirements.lock")
if [ "${EVLGEN_GPU:-}" = "1" ] || command -v nvidia-smi >/dev/null 2>&1; then
  locks+=("$root/requirements-gpu.lock")
fi
stamp="$venv/.evlgen-installed"
want=$(cat "${locks[@]}" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  echo "[setup] .venv is up to date"
else
  # torch's CUDA libraries make up most of the 6 GB; fail early rather than half-way through pip.
  need_mb=6500
  free_mb=$(df -Pm "$root" | awk 'NR==2 {print $4}')
  if [ -n "$free_mb" ] && [ "$free_mb" -lt "$need_mb" ] && [ ! -x "$venv/bin/python" ]; then
    echo "[setup] not enough disk space: the environment needs about $need_mb MB under $root, $free_mb MB are free" >&2
    exit 1
  fi
  echo "[setup] installing pinned packages into $venv (about 90 s from the package mirrors)"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  log="$venv/pip-install.log"
  requirements=()
  for lock in "${locks[@]}"; do requirements+=(-r "$lock"); done
  if ! "$venv/bin/pip" install -q --no-cache-dir --no-deps "${requirements[@]}" >"$log" 2>&1 ||
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
