#!/usr/bin/env bash
# Regenerates deploy/requirements.txt, the hash-pinned lock of
# deploy/requirements.in, for CPython 3.11 on x86_64 Linux.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet pip-tools==7.7.0
"$tmp/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
    --output-file deploy/requirements.txt deploy/requirements.in
