#!/usr/bin/env bash
# Main job on the embedded defaults: set up, create a software My Number card and run a
# full cycle against it (certificates, PIN status, 個人番号 and 基本4情報 with J-LIS's
# signature checked, the card face, a JPKI signature verified), printing a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cardio demo "$@"
