#!/usr/bin/env bash
# Installs what the build, the server and the tests need, from the package
# registries only:
#   - .venv: the hash-pinned Python packages of tools/requirements.txt, which
#     include the onnxruntime wheel whose libonnxruntime.so the server loads;
#   - the Rust toolchain is expected on PATH (cargo).
# Safe to run again: it does nothing when the lock has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp="$venv/.requirements.sha256"
want=$(sha256sum tools/requirements.txt | cut -d' ' -f1)

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "setup: installing Python packages into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        --require-hashes --only-binary=:all: -r tools/requirements.txt
    echo "$want" > "$stamp"
fi

command -v cargo >/dev/null || { echo "setup: cargo not found on PATH; install Rust 1.92 or newer" >&2; exit 1; }
