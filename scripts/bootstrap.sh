#!/usr/bin/env bash
# Creates .venv (if missing) and installs gradwatch with the given extras into it.
# Sourced by scripts/demo.sh and scripts/test.sh so a fresh machine needs nothing else.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GRADWATCH_VENV:-$ROOT/.venv}"
EXTRAS="${1:-demo}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.gradwatch-installed-$EXTRAS"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import gradwatch" # fail loudly if the install did not work
  touch "$STAMP"
fi
