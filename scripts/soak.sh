#!/usr/bin/env bash
# Soak test: mixed valid and invalid traffic at 70% of measured capacity for
# SOAK_SECONDS (default 1800), reporting RSS at start and end and error counts.
# Usage: scripts/soak.sh [extra scripts/soak.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=env.sh
source scripts/env.sh
exec "$EFFNET_PYTHON" scripts/soak.py --duration "${SOAK_SECONDS:-1800}" "$@"
