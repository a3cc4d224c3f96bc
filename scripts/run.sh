#!/usr/bin/env bash
# Installs everything, builds the model repository and the server, and
# starts the server on the built models: HTTP on :8000, gRPC on :8001.
# Extra arguments go to `effnet-serve serve`, e.g. --http-addr 127.0.0.1:9000.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/build-models.sh
cargo build --release --locked --bin effnet-serve

# shellcheck source=env.sh
source scripts/env.sh
exec target/release/effnet-serve serve \
    --model-repository "$EFFNET_MODEL_REPOSITORY" \
    --http-addr "${EFFNET_HTTP_ADDR:-0.0.0.0:8000}" \
    "$@"
