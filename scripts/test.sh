#!/usr/bin/env bash
# The whole test suite, on the real embedded broker and chDB; sets itself up first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/setup_browser.sh   # Debian chromium for the dashboard browser test
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
