#!/usr/bin/env bash
# Builds the effnet-serve image with podman on a machine that reaches no
# container registry, only Debian's archive, crates.io and PyPI:
#
#   1. localhost/effnet-base-debian:bookworm: a minimal Debian rootfs made
#      with debootstrap and imported (the runtime base);
#   2. localhost/effnet-base-python:bookworm: that plus Debian's python3 (3.11)
#      and venv;
#   3. localhost/effnet-base-rust:<version>: that plus gcc and this machine's
#      Rust toolchain, copied from ~/.rustup, because no toolchain can be
#      downloaded here;
#   4. the image itself from deploy/Dockerfile, with those three as
#      RUST_IMAGE, PYTHON_IMAGE and RUNTIME_IMAGE.
#
# Bases that already exist are reused; delete them with `podman rmi` to
# rebuild. Needs root and the Debian packages podman, buildah, runc and
# debootstrap (installed when missing).
#
# Environment: EFFNET_IMAGE (tag, default localhost/effnet-serve:dev),
# EFFNET_IMAGENET_SAMPLE (calibration photos, default
# ../shared/data/imagenet-sample), DEBIAN_MIRROR, RUST_TOOLCHAIN (a
# directory under ~/.rustup/toolchains, default: the active toolchain).
set -euo pipefail
cd "$(dirname "$0")/.."

image=${EFFNET_IMAGE:-localhost/effnet-serve:dev}
calibration=${EFFNET_IMAGENET_SAMPLE:-../shared/data/imagenet-sample}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
debian_base=localhost/effnet-base-debian:$suite
python_base=localhost/effnet-base-python:$suite

# runc explicitly: podman prefers crun where both are installed, and this
# script has been run with runc only.
podman=(podman --runtime runc)
buildah=(buildah)

log() { echo "build-image: $*" >&2; }

install_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v buildah >/dev/null || missing+=(buildah)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

image_exists() { "${podman[@]}" image exists "$1"; }

# Debian minbase: no documentation, no recommends; apt stays so that the
# derived bases can install packages.
make_debian_base() {
    image_exists "$debian_base" && return
    log "debootstrap $suite into a rootfs (a few minutes)"
    local rootfs
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -c . \
        | "${podman[@]}" import --change 'CMD ["/bin/bash"]' - "$debian_base" >/dev/null
    rm -rf "$rootfs"
    log "made $debian_base"
}

# Runs apt-get install in a working container; the build network is the
# host's, which reaches the Debian mirror.
apt_install() {
    local container=$1
    shift
    "${buildah[@]}" run --runtime runc --network host "$container" -- sh -c \
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $* >/dev/null && rm -rf /var/lib/apt/lists/*"
}

# Adds the certificate authorities of this machine (as in
# /usr/local/share/ca-certificates, for example of an egress proxy that
# re-signs TLS) to a build base, so that cargo and pip inside the build
# verify crates.io and PyPI as they do on the host. Only the build bases
# get them; the runtime image does not.
trust_local_cas() {
    local container=$1
    apt_install "$container" ca-certificates
    shopt -s nullglob
    local certs=(/usr/local/share/ca-certificates/*.crt)
    shopt -u nullglob
    if ((${#certs[@]})); then
        for cert in "${certs[@]}"; do
            "${buildah[@]}" copy --quiet "$container" "$cert" /usr/local/share/ca-certificates/ >/dev/null
        done
        "${buildah[@]}" run --runtime runc "$container" -- update-ca-certificates >/dev/null
    fi
    "${buildah[@]}" config \
        --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        "$container"
}

make_python_base() {
    image_exists "$python_base" && return
    log "making $python_base"
    local container
    container=$("${buildah[@]}" from "$debian_base")
    trust_local_cas "$container"
    apt_install "$container" python3 python3-venv
    "${buildah[@]}" commit --quiet --rm "$container" "$python_base" >/dev/null
}

make_rust_base() {
    local toolchain=$1 tag=$2
    image_exists "$tag" && return
    log "making $tag from $toolchain"
    local container
    container=$("${buildah[@]}" from "$debian_base")
    trust_local_cas "$container"
    apt_install "$container" gcc libc6-dev pkg-config
    # The toolchain directory holds real cargo and rustc binaries (not
    # rustup proxies); share/ is documentation and is left out.
    for part in bin lib libexec etc; do
        [[ -e "$toolchain/$part" ]] || continue
        "${buildah[@]}" copy --quiet "$container" "$toolchain/$part" "/usr/local/rust/$part" >/dev/null
    done
    "${buildah[@]}" config \
        --env CARGO_HOME=/usr/local/cargo \
        --env PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        "$container"
    "${buildah[@]}" commit --quiet --rm "$container" "$tag" >/dev/null
}

install_tools

toolchain_name=${RUST_TOOLCHAIN:-$(rustup show active-toolchain | cut -d' ' -f1)}
toolchain=$HOME/.rustup/toolchains/$toolchain_name
[[ -x "$toolchain/bin/cargo" ]] || { log "no cargo in $toolchain; set RUST_TOOLCHAIN to a directory under ~/.rustup/toolchains" >&2; exit 1; }
rust_version=$("$toolchain/bin/rustc" --version | cut -d' ' -f2)
rust_base=localhost/effnet-base-rust:$rust_version

[[ -f "$calibration/labels.tsv" ]] || { log "no labels.tsv in $calibration; set EFFNET_IMAGENET_SAMPLE to the calibration photos" >&2; exit 1; }

make_debian_base
make_python_base
make_rust_base "$toolchain" "$rust_base"

log "building $image (compiles the server and builds the models; slow on few cores)"
"${podman[@]}" build \
    --network host \
    --file deploy/Dockerfile \
    --build-arg "RUST_IMAGE=$rust_base" \
    --build-arg "PYTHON_IMAGE=$python_base" \
    --build-arg "RUNTIME_IMAGE=$debian_base" \
    --build-context "calibration=$calibration" \
    --tag "$image" \
    .
log "built $image"
"${podman[@]}" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$image"
