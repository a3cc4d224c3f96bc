#!/usr/bin/env bash
# Produces the protocol figures of docs/benchmarks.md in one run against one
# server (HTTP and gRPC, default settings, all available models):
#   1. perf_analyzer and effnet-loadtest back to back, over OIP HTTP (binary
#      tensor data) and OIP gRPC, for each model and concurrency;
#   2. each model of EFFNET_BENCH_PROTOCOL_MODELS (default lite0 INT8) at
#      saturation over each protocol of effnet-loadtest, between two
#      in-process ceilings;
#   3. the mixed load of loadtest/bench.sh over every ready model.
# Every command goes to OUT_DIR/commands.txt and the 1-minute load average
# before and after each measurement to OUT_DIR/load.tsv.
# Usage: loadtest/bench-protocols.sh OUT_DIR. Needs release binaries and
# .venv-triton (scripts/setup-triton.sh) with Debian's libb64-0d.
# EFFNET_BENCH_PARTS selects the parts (default "perf protocols mixed").
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../scripts/env.sh
source scripts/env.sh

out=${1:?usage: loadtest/bench-protocols.sh OUT_DIR}
mkdir -p "$out"
: >"$out/commands.txt"
printf 'measurement\tload_before\tload_after\n' >"$out/load.tsv"
http_port=${EFFNET_BENCH_PORT:-18431}
grpc_port=$((http_port + 1))
bin=target/release
images="$EFFNET_IMAGENET_SAMPLE/images"
read -r -a concurrencies <<<"${EFFNET_BENCH_CONCURRENCY:-1 2 4}"
seconds=${EFFNET_BENCH_SECONDS:-10}
parts=" ${EFFNET_BENCH_PARTS:-perf protocols mixed} "
read -r -a protocol_models <<<"${EFFNET_BENCH_PROTOCOL_MODELS:-efficientnet-lite0-int8}"

# perf_analyzer links libcudart.so.12 even on CPU; the
# nvidia-cuda-runtime-cu12 wheel in .venv-triton ships it.
perf_analyzer=.venv-triton/bin/perf_analyzer
purelib=$(.venv-triton/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export LD_LIBRARY_PATH="$purelib/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# shellcheck source=bench-common.sh
source loadtest/bench-common.sh
trap stop_server EXIT
start_server "$http_port" --grpc-addr "127.0.0.1:$grpc_port"

load_average() {
    cut -d' ' -f1 /proc/loadavg
}

# measure NAME TOOL ARGS...: runs the tool with ARGS, stdout to
# OUT_DIR/NAME.txt, and records the command and the load around it.
measure() {
    local name=$1 tool=$2
    shift 2
    echo "+ $tool $*" | tee -a "$out/commands.txt"
    local before
    before=$(load_average)
    case $tool in
    perf_analyzer) "$perf_analyzer" "$@" >"$out/$name.txt" 2>&1 ;;
    effnet-loadtest) "$bin/effnet-loadtest" "$@" >"$out/$name.txt" 2>&1 ;;
    esac
    printf '%s\t%s\t%s\n' "$name" "$before" "$(load_average)" >>"$out/load.tsv"
}

# 1. perf_analyzer against effnet-loadtest, same protocol and concurrency.
[[ $parts == *" perf "* ]] || concurrencies=()
for model in efficientnet-lite0-int8 efficientnet-lite0-fp32; do
    ((${#concurrencies[@]} > 0)) || break
    for concurrency in "${concurrencies[@]}"; do
        for protocol in http grpc; do
            if [[ $protocol == http ]]; then
                port=$http_port loadtest_protocol=oip-binary
            else
                port=$grpc_port loadtest_protocol=oip-grpc
            fi
            name="$model-$protocol-c$concurrency"
            measure "pa-$name" perf_analyzer -m "$model" -u "127.0.0.1:$port" -i "$protocol" \
                --input-data zero --concurrency-range "$concurrency" \
                --measurement-interval $((seconds * 1000 / 3)) --max-trials 3 \
                --stability-percentage 100 -f "$out/pa-$name.csv"
            measure "lt-$name" effnet-loadtest run --target "127.0.0.1:$port" \
                --protocol "$loadtest_protocol" --oip-input fp32 --model "$model" \
                --images "$images" --concurrency "$concurrency" --duration "$seconds" \
                --warmup 1 --json "$out/lt-$name.json"
        done
    done
done

# 2. Each model at saturation over every protocol, between two ceilings.
# Outputs are prefixed with the model unless it is lite0 INT8 alone.
[[ $parts == *" protocols "* ]] || protocol_models=()
for model in "${protocol_models[@]}"; do
    prefix=$model-
    [[ ${protocol_models[*]} == efficientnet-lite0-int8 ]] && prefix=
    ceiling=(ceiling --model "$model" --images "$images" --batch-sizes 1,2,4 --seconds-per-size 3)
    measure "${prefix}ceiling-before" effnet-loadtest "${ceiling[@]}" --json "$out/${prefix}ceiling-before.json"
    for spec in rest:bytes oip-json:fp32 oip-binary:bytes oip-binary:fp32 \
        grpc-classify:bytes oip-grpc:bytes oip-grpc:fp32; do
        protocol=${spec%:*} input=${spec#*:}
        port=$http_port
        [[ $protocol == grpc-classify || $protocol == oip-grpc ]] && port=$grpc_port
        name="${prefix}protocol-$protocol-$input"
        measure "$name" effnet-loadtest run --target "127.0.0.1:$port" \
            --protocol "$protocol" --oip-input "$input" --model "$model" --images "$images" \
            --concurrency 4 --duration "$seconds" --warmup 1 --json "$out/$name.json"
    done
    measure "${prefix}ceiling-after" effnet-loadtest "${ceiling[@]}" --json "$out/${prefix}ceiling-after.json"
done

# 3. The mixed load of loadtest/bench.sh.
[[ $parts == *" mixed "* ]] || exit 0
mix=()
for model in $(curl -sf "http://127.0.0.1:$http_port/v1/models" | jq -r '.models[] | select(.state == "ready") | .name'); do
    mix+=(--model "$model")
done
measure mixed effnet-loadtest run --target "127.0.0.1:$http_port" --images "$images" \
    --with-ceiling --seconds-per-size 2 --batch-sizes 1,2,4 "${mix[@]}" \
    --concurrency 6 --duration 20 --warmup 2 --json "$out/mixed.json"
