#!/usr/bin/env bash
# Regenerates tools/requirements-triton.txt, the hash-pinned lock of
# tools/requirements-triton.in (Triton's clients for the protocol tests),
# for CPython 3.11 on x86_64 Linux. The lock is independent of the main one.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet pip-tools==7.7.0
"$tmp/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
    --output-file tools/requirements-triton.txt tools/requirements-triton.in
