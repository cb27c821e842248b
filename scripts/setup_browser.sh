#!/usr/bin/env bash
# Installs Debian's chromium for the headless browser test (tests/test_browser.py) if it is
# missing. The Python driver (playwright) never downloads a browser of its own: it is pointed
# at /usr/bin/chromium. Idempotent and quiet; needs root (apt-get).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "setup_browser: installing chromium failed (full log: $log)" >&2
    exit 1
fi
rm -f "$log"
