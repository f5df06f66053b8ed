#!/usr/bin/env bash
# One command for the demo: sets up .venv, then trains on scikit-learn's digits
# while an embedded server streams the run to the dashboard URL it prints.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh" demo
exec "${GRADWATCH_VENV:-$ROOT/.venv}/bin/gradwatch" demo "$@"
