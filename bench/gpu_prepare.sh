#!/usr/bin/env bash
# Prepare a GPU run on the lent machine (see bench/gpu_run.sh): download the wheels its image lacks into .whl/
# and copy the labelled data (no colour previews) into .gpu_data/; both are git-ignored via .git/info/exclude.
# The working tree that travels is limited to 64 MiB: pass DATASETS="uhcs" to copy one dataset only.
set -euo pipefail
cd "$(dirname "$0")/.."
for path in /.whl/ /.gpu_data/; do grep -qxF "$path" .git/info/exclude || echo "$path" >> .git/info/exclude; done
mkdir -p .whl .gpu_data
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl diffusers zarr numcodecs donfig google-crc32c segmentation-models-pytorch
for name in ${DATASETS:-uhcs metaldam}; do
    mkdir -p ".gpu_data/$name"
    for part in images masks splits SOURCE.txt uhcs-metadata.csv MetalDAM_metadata.sqlite; do
        [ -e "../shared/data/$name/$part" ] && cp -r "../shared/data/$name/$part" ".gpu_data/$name/"
    done
done
du -sh .whl .gpu_data
