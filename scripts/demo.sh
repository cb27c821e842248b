#!/usr/bin/env bash
# Quick start: embedded broker + embedded ClickHouse + Tripwire worker + a simulated fleet.
# Extra arguments go to `tripwire run` (e.g. --duration 60, --broker-port 19092).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/tripwire run --demo "$@"
