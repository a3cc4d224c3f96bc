# Server start and stop for the benchmark scripts; sourced, not run.
# Callers set `out` (output folder) and `bin` (release binaries) first.

server_pid=

stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}

# start_server HTTP_PORT [effnet-serve flags...]: all available models,
# default settings, log in $out/server.log; returns once the server is ready.
start_server() {
    local http_port=$1
    shift
    "$bin/effnet-serve" serve --model-repository "$EFFNET_MODEL_REPOSITORY" \
        --http-addr "127.0.0.1:$http_port" "$@" >"$out/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$http_port/health/ready" >/dev/null && return 0
        sleep 0.5
    done
    echo "server not ready" >&2
    return 1
}
