#!/usr/bin/env bash
# Prepare what bench/gpu_run.py needs on a GPU machine that can download nothing (Python 3.12,
# torch, transformers, safetensors, numpy, accelerate, opencv, scipy, pillow; no diffusers).
# Run in the repository root, on a machine that reaches PyPI:
#
#     bash bench/gpu_wheels.sh PATH_TO_HALLO_CHECKOUT
#
# Makes two folders, both ignored by git (.gitignore), to carry to the GPU machine:
#   .whl/           our side's wheels: diffusers at the version CI pins (.ci/constraints.txt)
#   .hallo/src/     Hallo's `hallo` package and LICENSE (MIT), copied from the checkout, and the
#                   commit it came from (COMMIT)
#   .hallo/wheels/  Hallo's side: diffusers 0.27.2 (Hallo's requirements.txt pin)
# Pure-Python wheels only, so Python 3.12 there and another version here do not matter.
# av, librosa and soxr are not needed: bench/gpu_run.py never decodes audio or video.
set -euo pipefail

hallo=${1:?usage: bash bench/gpu_wheels.sh PATH_TO_HALLO_CHECKOUT}
if [[ ! -f "$hallo/hallo/models/unet_3d.py" ]]; then
    echo "gpu_wheels: $hallo is not a Hallo checkout (no hallo/models/unet_3d.py);" \
         "clone fudan-generative-vision/hallo and give its folder." >&2
    exit 1
fi
python=${PYTHON:-python3}
ours_diffusers=$(sed -n 's/^diffusers==//p' .ci/constraints.txt)
if [[ -z "$ours_diffusers" ]]; then
    echo "gpu_wheels: no diffusers pin in .ci/constraints.txt" >&2
    exit 1
fi

download() {  # download FOLDER NAME==VERSION...
    local folder=$1
    shift
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$folder" "$@"
}

rm -rf .whl .hallo
mkdir -p .whl .hallo/wheels .hallo/src
download .whl "diffusers==$ours_diffusers"
download .hallo/wheels "diffusers==0.27.2"
cp -r "$hallo/hallo" .hallo/src/hallo
cp "$hallo/LICENSE" .hallo/src/
git -C "$hallo" rev-parse HEAD > .hallo/src/COMMIT 2>/dev/null || echo unknown > .hallo/src/COMMIT
find .hallo/src -name __pycache__ -prune -exec rm -rf {} +

ls -l .whl .hallo/wheels
du -sh .whl .hallo
