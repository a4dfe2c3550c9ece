#!/usr/bin/env bash
# Train, evaluate and time the best generator on a GPU machine within a wall budget (see bench/gpu_run.py).
#
# Usage: bash bench/gpu_run.sh OUT [BUDGET_MINUTES] [extra gpu_run.py options]
#
# On the project's lent GPU machine (torch preinstalled, no network, ../shared not copied): first, here,
#   bash bench/gpu_prepare.sh            # wheels the GPU image lacks -> .whl/, UHCS + MetalDAM -> .gpu_data/
# then run there with carry [".whl", ".gpu_data"]:
#   bash bench/gpu_run.sh $OUT 8 --datasets uhcs metaldam
# On a workstation with the project installed, the same command uses the installed packages and ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash bench/gpu_run.sh OUT [BUDGET_MINUTES] [options]}"
budget="${2:-8}"
shift $(( $# >= 2 ? 2 : 1 ))
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] && python=.venv/bin/python
if [ -d .whl ] && compgen -G ".whl/*.whl" > /dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
data_root=../shared/data
[ -d .gpu_data ] && data_root=.gpu_data
mkdir -p "$out"
"$python" bench/gpu_run.py "$out" --budget-minutes "$budget" --data-root "$data_root" "$@"
