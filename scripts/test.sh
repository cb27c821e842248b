#!/usr/bin/env bash
# The whole test suite, on the real embedded broker and chDB; sets itself up first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/setup_browser.sh   # Debian chromium for the dashboard browser test
.venv/bin/ruff check .
# .venv/bin/pytest, not `python -m pytest`: that would put the checkout itself on sys.path and
# hide an import of a top-level `sdk` or `schemas` that the installed package does not have.
# Two processes (pytest-xdist), each taking whole files (--dist loadfile), so a file's
# module fixtures and its ordered tests stay in one process: the suite took 1,214 s in one
# process and 626 s in two on the 2-core box. Each process has its own broker and chDB dir.
# Pass -n 0 to run in one process (the last -n wins).
exec .venv/bin/pytest -q --durations=25 -n 2 --dist loadfile "$@"
