#!/usr/bin/env bash
# Produces the figures of docs/benchmarks.md on this machine: for each model
# given (default lite0 FP32 and INT8), the in-process ceiling and then the
# server's saturated REST throughput in one effnet-loadtest run (their
# ratio), open-loop latency at 50 % and 80 % of that throughput, a mixed
# load over every available model, and the server's thread count.
# Usage: loadtest/bench.sh OUT_DIR [MODEL...]. Needs release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../scripts/env.sh
source scripts/env.sh

out=${1:?usage: loadtest/bench.sh OUT_DIR [MODEL...]}
shift
models=("${@:-efficientnet-lite0-fp32}")
(($# > 0)) || models=(efficientnet-lite0-fp32 efficientnet-lite0-int8)
mkdir -p "$out"
port=${EFFNET_BENCH_PORT:-18431}
bin=target/release
images="$EFFNET_IMAGENET_SAMPLE/images"
# shellcheck source=bench-common.sh
source loadtest/bench-common.sh
trap stop_server EXIT

# loadtest ARGS...: prints the command, then runs it against the server.
loadtest() {
    echo "+ effnet-loadtest $*" | tee -a "$out/commands.txt"
    "$bin/effnet-loadtest" "$@" --target "127.0.0.1:$port" --images "$images"
}

# shellcheck disable=SC2086 # the extra flags are meant to split
start_server "$port" ${EFFNET_BENCH_SERVER_FLAGS:-}
grep Threads "/proc/$server_pid/status" | tee "$out/threads.txt"

for model in "${models[@]}"; do
    loadtest run --with-ceiling --model "$model" --concurrency 4 --duration 15 \
        --warmup 2 --json "$out/$model-saturated.json" | tee "$out/$model-saturated.md"
    saturated=$(jq '.total.throughput' "$out/$model-saturated.json")
    for share in 50 80; do
        rate=$(jq -n "$saturated * $share / 100")
        loadtest run --model "$model" --rate "$rate" --duration 15 --warmup 2 \
            --json "$out/$model-open-$share.json" | tee "$out/$model-open-$share.md"
    done
done

mix=()
for model in $(curl -sf "http://127.0.0.1:$port/v1/models" | jq -r '.models[] | select(.state == "ready") | .name'); do
    mix+=(--model "$model")
done
if ((${#mix[@]} > 0)); then
    loadtest run --with-ceiling --seconds-per-size 2 --batch-sizes 1,2,4 "${mix[@]}" \
        --concurrency 6 --duration 20 --warmup 2 --json "$out/mixed.json" | tee "$out/mixed.md"
fi
