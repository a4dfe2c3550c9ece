#!/usr/bin/env bash
# Set up (first run only) and run the main job on the bundled sample data; results go to ./demo_output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh qt
.venv/bin/microsynth demo --out demo_output --overwrite "$@"
