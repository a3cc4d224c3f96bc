#!/usr/bin/env bash
# Runs every fuzz target briefly (FUZZ_SECONDS each, default 20) from the
# committed seed corpus, for CI. Needs cargo-fuzz (`cargo install cargo-fuzz`).
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets rustc accept them.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-20}"
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    work="$(mktemp -d)"
    echo "== fuzz $target (${seconds}s)"
    cargo fuzz run "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20
    rm -rf "$work"
done
