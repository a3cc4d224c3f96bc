#!/usr/bin/env bash
# Regenerates tools/requirements-tf.txt, the hash-pinned lock of
# tools/requirements-tf.in, for CPython 3.11 on x86_64 Linux. Run
# scripts/pin-requirements.sh first when tools/requirements.in changed,
# because the TensorFlow lock is constrained by the main lock.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet pip-tools==7.7.0
"$tmp/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
    --output-file tools/requirements-tf.txt tools/requirements-tf.in
