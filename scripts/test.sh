#!/usr/bin/env bash
# The whole test suite, on the real embedded broker and chDB; sets itself up first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
