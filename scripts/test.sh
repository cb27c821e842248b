#!/usr/bin/env bash
# The whole test suite, on the real embedded broker and chDB; sets itself up first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/setup_browser.sh   # Debian chromium for the dashboard browser test
.venv/bin/ruff check .
# .venv/bin/pytest, not `python -m pytest`: that would put the checkout itself on sys.path and
# hide an import of a top-level `sdk` or `schemas` that the installed package does not have.
exec .venv/bin/pytest -q --durations=25 "$@"
