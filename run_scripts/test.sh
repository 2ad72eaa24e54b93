#!/usr/bin/env bash
# README command 2: set up the environment from nothing, lint with ruff (rules in pyproject.toml), then run
# the whole test suite. A ruff finding fails the command before any test runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/run_scripts/setup_env.sh"
cd "$root"
"$root/.venv/bin/ruff" check .
exec "$root/.venv/bin/python" -m pytest -q "$@"
