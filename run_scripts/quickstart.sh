#!/usr/bin/env bash
# README command 1: set up the environment from nothing, then run the quickstart on the embedded default:
# prepare weights and data, train EVLGen with train.py (CPU), evaluate, caption, draw the pictures.
# Extra arguments go to the quickstart, e.g. --options run.max_iters=300
# The install time is handed to the quickstart, which prints it with the time of every other phase.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
start=$(date +%s)
bash "$root/run_scripts/setup_env.sh"
export EVLGEN_INSTALL_SECONDS=$(( $(date +%s) - start ))
echo "[quickstart] environment ready after $EVLGEN_INSTALL_SECONDS s"
cd "$root"
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
exec "$root/.venv/bin/python" -m lavis_evlgen.tools.quickstart "$@"
