#!/usr/bin/env bash
# The Quix Streams peer job of `tripwire bench` (bench/quix_peer.py) in a virtualenv of its own:
# quixstreams 3.28 requires pydantic < 2.14, pydantic-settings < 2.16 and confluent-kafka < 2.13,
# below the versions the server is pinned to, so it cannot share .venv. The job imports only
# the contract (tripwire-sdk, ./sdk) besides Quix. Versions: bench/quix-constraints.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv-quix/bin/python ]; then
    "$PY" -m venv .venv-quix
fi
.venv-quix/bin/python -m pip install -q -c bench/quix-constraints.txt quixstreams ./sdk
.venv-quix/bin/python -c 'import quixstreams, tripwire.schemas.codec' \
    && echo "tripwire: Quix Streams peer ready in .venv-quix" >&2
