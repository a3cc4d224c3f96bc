#!/usr/bin/env bash
# Installs .venv-tf, a second virtual environment for importing the official
# EfficientNet-Lite TensorFlow checkpoints: the hash-pinned packages of
# tools/requirements-tf.txt, which are the main lock's packages plus
# tensorflow-cpu and its dependencies. The main .venv stays without
# TensorFlow. Run the model build tool with .venv-tf/bin/python to use
# --tf-checkpoint, or the TensorFlow tests.
# Safe to run again: it does nothing when the lock has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-tf
stamp="$venv/.requirements.sha256"
want=$(sha256sum tools/requirements-tf.txt | cut -d' ' -f1)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi

echo "setup-tf: installing Python packages with TensorFlow into $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    --require-hashes --only-binary=:all: -r tools/requirements-tf.txt
echo "$want" > "$stamp"
