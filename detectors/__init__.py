"""Tripwire's detectors and breaker: pure, synchronous Python over plain event dicts.

Where things are:

* ``agent_monitor.AgentMonitor``: one agent's detectors plus breaker; the stream's entry point.
* ``denial_rate``, ``loops``, ``spend``, ``prompt_injection_hits``: the detectors.
* ``breaker.Breaker``: modes, cool-down, probation, run stops, operator commands.
* ``policy``: every threshold, window, budget and cool-down, with the reason for each default.
* ``severity.SeverityBands``: where a value is compared with its thresholds, and the fire /
  re-arm (hysteresis) rule.
* ``windows``, ``evidence``, ``runs``: event-time windows, evidence ids, per-run state.

No Kafka, Faust, ClickHouse or I/O here: everything is testable with plain dicts.
"""

from __future__ import annotations

import os

COMPILED_ENV = "TRIPWIRE_COMPILED_DETECTORS"
COMPILED_MODULES = ("windows", "evidence", "runs", "loops", "spend", "denial_rate",
                    "agent_monitor")
"""The modules ``python -m tripwire.bench.compile_detectors`` can compile (Cython, from the
unchanged sources): the replay's hot path, ~25 % less CPU compiled (README, "Backtest")."""

COMPILED: str | None = None
"""The directory the compiled detector modules are loaded from, or None: the pure-Python
modules (the default, and what every install has)."""


def _use_compiled(directory: str) -> str | None:
    """Load the compiled modules from ``directory`` ahead of the sources, if that build was
    made from exactly these sources for this interpreter; otherwise say why on stderr and keep
    the pure-Python modules (a stale build must never run instead of the code beside it)."""
    import hashlib
    import json
    import sys
    import sysconfig
    from pathlib import Path

    here = Path(__file__).resolve().parent
    try:
        manifest = json.loads((Path(directory) / "manifest.json").read_text())
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        if manifest.get("ext_suffix") != suffix:
            why = f"built for {manifest.get('ext_suffix')}, this interpreter loads {suffix}"
        else:
            stale = [name for name, digest in manifest["sources"].items()
                     if hashlib.sha256((here / f"{name}.py").read_bytes()).hexdigest() != digest
                     or not (Path(directory) / f"{name}{suffix}").is_file()]
            why = f"built from other sources: {', '.join(stale)}" if stale else ""
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = f"no usable build there ({e})"
    if why:
        print(f"tripwire: {COMPILED_ENV}={directory}: {why}; using the pure-Python detectors",
              file=sys.stderr)
        return None
    __path__.insert(0, str(Path(directory).resolve()))
    return directory


if os.environ.get(COMPILED_ENV):
    COMPILED = _use_compiled(os.environ[COMPILED_ENV])
