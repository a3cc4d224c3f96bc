#!/usr/bin/env bash
# Builds the model repository into $EFFNET_MODEL_REPOSITORY (FP32 and INT8 ONNX
# models, manifests, offline evaluation) with the Python tool in tools/.
#
# Skips the build when the repository's stamp file matches the sha256 of the
# tool's sources and tools/requirements.txt. The build runs in a temporary
# directory next to the output and is renamed into place only when it
# succeeds, so a failed build never leaves a partial repository.
# Extra arguments go to `python -m effnet_modelbuild build` (e.g. --variants lite0).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$EFFNET_ROOT"

[[ -x .venv/bin/python ]] || bash scripts/setup.sh

output=$EFFNET_MODEL_REPOSITORY
stamp_file=.build-stamp
stamp=$(
    {
        find tools/effnet_modelbuild -name '*.py' -type f -print0 | sort -z | xargs -0 sha256sum
        sha256sum tools/requirements.txt
        echo "args: $*"
    } | sha256sum | cut -d' ' -f1
)

if [[ -f "$output/$stamp_file" && "$(cat "$output/$stamp_file")" == "$stamp" ]]; then
    echo "build-models: $output is up to date"
    exit 0
fi

parent=$(dirname "$output")
mkdir -p "$parent"
staging=$(mktemp -d "$parent/.model-repository.XXXXXX")
trap 'rm -rf "$staging"' EXIT

"$EFFNET_PYTHON" -m effnet_modelbuild build --output "$staging" --images "$EFFNET_IMAGENET_SAMPLE" "$@"
echo "$stamp" > "$staging/$stamp_file"
chmod 755 "$staging"

previous=""
if [[ -e "$output" ]]; then
    previous="$parent/.model-repository.old.$$"
    mv "$output" "$previous"
fi
mv "$staging" "$output"
[[ -z "$previous" ]] || rm -rf "$previous"
echo "build-models: wrote $output"
