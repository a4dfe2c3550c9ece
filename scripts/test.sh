#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite under a virtual X server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_gui_libs.sh
bash scripts/setup_env.sh testing
.venv/bin/npe2 validate napari-microsynth --imports
QT_API=pyqt6 xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python -m pytest "$@"
