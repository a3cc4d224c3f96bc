#!/usr/bin/env bash
# Smoke run of the load tester, a few seconds: starts the release server on a
# free loopback port with only efficientnet-lite0-int8 loaded, sends 3 s of
# closed-loop REST load, and checks that requests succeeded and that the
# JSON report was written. Expects `cargo build --release` to have built
# both binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../scripts/env.sh
source scripts/env.sh

bin=target/release
work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/config.toml" <<'TOML'
[models.default]
enabled = false

[models.efficientnet-lite0-int8]
enabled = true
TOML

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin/effnet-serve" serve --config "$work/config.toml" \
    --model-repository "$EFFNET_MODEL_REPOSITORY" \
    --http-addr "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 120); do
    if curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/server.log" >&2
        echo "smoke: server exited during start-up" >&2
        exit 1
    fi
    sleep 0.5
done
curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null || {
    cat "$work/server.log" >&2
    echo "smoke: server not ready after 60 s" >&2
    exit 1
}

"$bin/effnet-loadtest" run --target "127.0.0.1:$port" \
    --model efficientnet-lite0-int8 --concurrency 2 \
    --duration 3 --warmup 0.5 --requests 2000 \
    --images "$EFFNET_IMAGENET_SAMPLE/images" --max-images 20 \
    --json "$work/report.json"

ok=$(jq '.total.ok' "$work/report.json")
errors=$(jq '[.total.errors[]] | add // 0' "$work/report.json")
if ((ok == 0 || errors != 0)); then
    echo "smoke: $ok requests succeeded, $errors failed" >&2
    exit 1
fi
echo "smoke: $ok requests succeeded, report written"
