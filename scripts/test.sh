#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (which start the real
# server on 127.0.0.1 with the real models) and the Python tool's tests.
# Installs and builds what is missing first, like run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/build-models.sh
# shellcheck source=env.sh
source scripts/env.sh

echo "== rustfmt and clippy"
cargo fmt --all --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings

echo "== cargo build"
cargo build --release --locked --workspace --all-targets

echo "== cargo test"
cargo test --release --locked --workspace --no-fail-fast

echo "== panic containment (test-only fault-injection build, debug profile)"
# A separate profile, so that the release binary run.sh uses never has the feature.
cargo test --locked -p effnet-serve --features fault-injection --test faults

echo "== fuzz targets, short pass"
command -v cargo-fuzz > /dev/null || cargo install --locked cargo-fuzz
bash fuzz/run-short.sh

echo "== load tester smoke run"
bash loadtest/smoke.sh

echo "== python tests"
"$EFFNET_PYTHON" -m pytest -q tools/tests

echo "== TensorFlow checkpoint import tests"
bash scripts/setup-tf.sh
.venv-tf/bin/python -m pytest -q tools/tests/test_tf_checkpoint.py

# --- Triton client tests (gRPC and OIP edges): Triton's Python client,
# grpcurl and perf_analyzer against the release binary built above.
echo "== Triton client tests"
bash scripts/setup-triton.sh
EFFNET_SERVE_BIN=target/release/effnet-serve .venv-triton/bin/python -m pytest -q tools/tests_triton
# --- end of Triton client tests

echo "== deploy checks"
bash deploy/check.sh
