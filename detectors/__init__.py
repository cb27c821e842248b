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

The hot modules (``compile_detectors.MODULES``) also exist compiled, from the same sources:
this file loads that build in their place when it is of exactly the sources beside it, so the
pure-Python modules are the reference and the fallback, never replaced by a stale build.
``TRIPWIRE_PURE_DETECTORS=1`` runs them regardless.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PURE_ENV = "TRIPWIRE_PURE_DETECTORS"
COMPILED_DIR = Path(__file__).resolve().parent / "compiled"
"""Where a compiled build of the hot modules sits (``compile_detectors.py`` at the checkout's
top: setup.py puts one into every wheel, scripts/setup.sh into the editable checkout)."""


def build_manifest(directory: Path) -> tuple[dict[str, Any], str]:
    """(the manifest of the build in ``directory``, '') when it is a build for this
    interpreter; else ({}, why not). The compiled Avro readers (``streams/compiled_readers.py``)
    read the same manifest."""
    import json
    import sysconfig

    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        if manifest.get("ext_suffix") != suffix:
            return {}, f"built for {manifest.get('ext_suffix')}, this interpreter loads {suffix}"
    except FileNotFoundError:
        return {}, "no compiled build"
    except (OSError, ValueError, AttributeError) as e:
        return {}, f"no usable compiled build ({e})"
    return manifest, ""


def build_status(directory: Path, sources: Path) -> tuple[tuple[str, ...], str]:
    """(the modules ``directory`` holds a build of, '') when it was built from exactly the
    sources in ``sources`` for this interpreter; else ((), why not)."""
    import hashlib
    import sysconfig

    manifest, why = build_manifest(directory)
    if why:
        return (), why
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    try:
        names = tuple(manifest["sources"])
        stale = [name for name in names
                 if not (directory / f"{name}{suffix}").is_file()
                 or hashlib.sha256((sources / f"{name}.py").read_bytes()).hexdigest()
                 != manifest["sources"][name]]
    except (OSError, KeyError, TypeError, AttributeError) as e:
        return (), f"no usable compiled build ({e})"
    if stale:
        return (), f"the compiled build is of other sources ({', '.join(stale)})"
    return names, ""


def _choose() -> tuple[tuple[str, ...], str]:
    if os.environ.get(PURE_ENV):
        return (), f"pure Python ({PURE_ENV} is set)"
    names, why = build_status(COMPILED_DIR, COMPILED_DIR.parent)
    if why:
        return (), f"pure Python ({why})"
    # Searched before the sources, so ``tripwire.detectors.loops`` is the extension module.
    __path__.insert(0, str(COMPILED_DIR))
    return names, f"compiled ({', '.join(names)})"


COMPILED, RUNNING = _choose()
"""The modules loaded compiled (none: all pure Python), and one line saying what runs and, if
pure Python, why."""
