# Sourced by the other scripts: the paths the build and the server share.
# shellcheck shell=bash
EFFNET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export EFFNET_ROOT
export PYTHONPATH="$EFFNET_ROOT/tools${PYTHONPATH:+:$PYTHONPATH}"
export EFFNET_PYTHON="$EFFNET_ROOT/.venv/bin/python"
# The ONNX Runtime shared library from the pinned onnxruntime wheel; the
# server loads it at start (ort's load-dynamic reads ORT_DYLIB_PATH).
ORT_DYLIB_PATH=$(ls "$EFFNET_ROOT"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.* 2>/dev/null | head -n 1 || true)
export ORT_DYLIB_PATH
export EFFNET_MODEL_REPOSITORY="${EFFNET_MODEL_REPOSITORY:-$EFFNET_ROOT/model-repository}"
export EFFNET_IMAGENET_SAMPLE="${EFFNET_IMAGENET_SAMPLE:-$EFFNET_ROOT/../shared/data/imagenet-sample}"
