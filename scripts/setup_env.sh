#!/usr/bin/env bash
# Create ./.venv (if missing) and install napari-microsynth into it with the given extras.
# Usage: scripts/setup_env.sh [extras]    e.g. scripts/setup_env.sh qt,testing
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-qt}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "napari-microsynth needs Python >= 3.10 (found $("$python" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$python" -m venv .venv; then
        echo "python3 -m venv failed; on Debian/Ubuntu install it with: apt-get install python3-venv" >&2
        exit 1
    fi
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
