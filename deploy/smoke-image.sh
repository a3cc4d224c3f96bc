#!/usr/bin/env bash
# Runs the image the way the Kubernetes manifests do and checks it end to
# end: read-only root filesystem, UID 65532, no capabilities, a 2-core CPU
# quota, the base configuration mounted at /etc/effnet-serve/config.toml,
# ports published on 127.0.0.1 only. Then it waits for /health/ready,
# classifies a labelled photo over HTTP, prints the server's memory with
# every model loaded, and sends SIGTERM to check the drain: readiness turns
# 503 while liveness stays 200, and the server exits 0.
#
# Environment: EFFNET_IMAGE (default localhost/effnet-serve:dev),
# EFFNET_IMAGENET_SAMPLE (default ../shared/data/imagenet-sample),
# SMOKE_HTTP_PORT and SMOKE_GRPC_PORT (host ports, default 18000, 18001).
set -euo pipefail
cd "$(dirname "$0")/.."

image=${EFFNET_IMAGE:-localhost/effnet-serve:dev}
sample=${EFFNET_IMAGENET_SAMPLE:-../shared/data/imagenet-sample}
http_port=${SMOKE_HTTP_PORT:-18000}
grpc_port=${SMOKE_GRPC_PORT:-18001}
name=effnet-smoke-$$
base_url=http://127.0.0.1:$http_port
podman=(podman --runtime runc)
# podman's default open-file and process limits for containers can exceed
# what the calling environment allows, and then runc fails to
# start the container with "error setting rlimit". These limits are far
# above what the server needs.
nofile=$(ulimit -Hn)
[[ "$nofile" == unlimited || "$nofile" -gt 16384 ]] && nofile=16384
nproc=4096

log() { echo "smoke-image: $*" >&2; }
fail() { log "FAILED: $*"; "${podman[@]}" logs --tail 30 "$name" >&2 || true; exit 1; }
status_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base_url$1" || true; }

cleanup() { "${podman[@]}" rm --force --time 0 "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# The first photo of the labelled sample and its ImageNet class index.
read -r photo_file photo_index _ < <(sed -n 2p "$sample/labels.tsv")
photo=$sample/images/$photo_file
[[ -f "$photo" ]] || fail "photo $photo not found; set EFFNET_IMAGENET_SAMPLE"

log "starting $image as $name"
"${podman[@]}" run --detach --name "$name" \
    --read-only --tmpfs /tmp:rw,size=64m \
    --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
    --cpus 2 --memory 3g --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
    --publish "127.0.0.1:$http_port:8000" --publish "127.0.0.1:$grpc_port:8001" \
    --volume "$PWD/deploy/kustomize/base/config.toml:/etc/effnet-serve/config.toml:ro" \
    "$image" serve --config /etc/effnet-serve/config.toml \
    --http-addr 0.0.0.0:8000 --grpc-addr 0.0.0.0:8001 >/dev/null

pid=$("${podman[@]}" inspect --format '{{.State.Pid}}' "$name")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[[ "$uid" == 65532 ]] || fail "server runs as UID $uid, expected 65532"
log "server pid $pid on the host, UID $uid"

# Loading and warming up six models took 6 s on 2 cores here; the limit
# leaves room for a slower or busier machine.
start=$SECONDS
until [[ "$(status_of /health/ready)" == 200 ]]; do
    (( SECONDS - start < 300 )) || fail "/health/ready not 200 after 300 s"
    [[ "$("${podman[@]}" inspect --format '{{.State.Running}}' "$name")" == true ]] || fail "container exited"
    sleep 2
done
log "ready after $((SECONDS - start)) s"
"${podman[@]}" logs "$name" 2>&1 \
    | jq -c 'select(.fields.message == "starting") | .fields | {cpu_budget, intra_op_threads, batch_workers, decode_workers}' 2>/dev/null \
    | sed 's/^/  threads from the CPU quota: /' || true
curl -s --max-time 5 "$base_url/v1/models" \
    | jq -r '.models[] | "  \(.name): \(.state)"' 2>/dev/null || true

response=$(curl -s --max-time 30 -w '\n%{http_code}' --data-binary "@$photo" \
    "$base_url/v1/models/efficientnet-lite0/classify?top_k=5")
code=${response##*$'\n'}
body=${response%$'\n'*}
[[ "$code" == 200 ]] || fail "classify returned HTTP $code: $body"
top=$(jq -r '.results[0].classes[0] | "\(.index) \(.label) \(.score)"' <<<"$body")
log "HTTP classify $photo_file (labelled $photo_index): top-1 $top"
jq -e --argjson want "$photo_index" '[.results[0].classes[].index] | index($want) != null' <<<"$body" >/dev/null \
    || fail "labelled class $photo_index not in the top 5: $body"
log "memory after loading every model and one request: $(grep -E '^(VmRSS|VmHWM)' "/proc/$pid/status" | tr -s ' \t' ' ' | paste -sd, -)"

# grpcurl comes from the Triton test environment (scripts/setup-triton.sh).
grpcurl=$(command -v grpcurl || find -L "$(dirname "$0")/../.venv-triton" -name grpcurl -type f 2>/dev/null | head -n 1)
[[ -n "$grpcurl" ]] || fail "grpcurl not found; run scripts/setup-triton.sh or install grpcurl"
services=$("$grpcurl" -plaintext "127.0.0.1:$grpc_port" list | paste -sd, -)
log "gRPC services: $services"
grpc_body=$(jq -n --rawfile image <(base64 -w0 "$photo") \
    '{model: "efficientnet-lite0-int8", image: $image, top_k: 5}' \
    | "$grpcurl" -plaintext -d @ "127.0.0.1:$grpc_port" effnet.v1.Classifier/Classify) \
    || fail "gRPC classify failed"
log "gRPC classify $photo_file: top-1 $(jq -r '.results[0].classes[0] | "\(.index // 0) \(.label) \(.score)"' <<<"$grpc_body")"
jq -e --argjson want "$photo_index" '[.results[0].classes[] | (.index // 0)] | index($want) != null' <<<"$grpc_body" >/dev/null \
    || fail "labelled class $photo_index not in the gRPC top 5: $grpc_body"

log "sending SIGTERM"
"${podman[@]}" kill --signal TERM "$name" >/dev/null
sleep 1
ready=$(status_of /health/ready)
live=$(status_of /health/live)
log "during the drain period: /health/ready $ready, /health/live $live"
[[ "$ready" == 503 ]] || fail "/health/ready returned $ready while draining, expected 503"
[[ "$live" == 200 ]] || fail "/health/live returned $live while draining, expected 200"

exit_code=$("${podman[@]}" wait "$name")
[[ "$exit_code" == 0 ]] || fail "server exited with $exit_code after SIGTERM"
log "server exited 0 after $((SECONDS - start)) s in all"
log "passed"
