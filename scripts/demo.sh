#!/usr/bin/env bash
# Main job on the embedded defaults: set up (Debian packages, .venv, Chromium), then one
# コンビニ交付 end to end — the emulated J-LIS side, municipalities, kiosk peripherals and a
# software card for a seeded resident; the kiosk's touch UI driven in headless Chromium;
# the printed page checked by the offline verifier — ending with a summary.
# Options go to `cardio demo kiosk` (--interactive, --dir DIR, --lang en, --json).
# The card-reading demo of earlier releases is `cardio demo card`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cardio demo kiosk "$@"
