"""The contract's hot Avro readers, compiled: installed into the decoder when ``tripwire.streams``
is imported, so the worker and its ClickHouse writer build their codecs on them.

``compile_detectors.py`` builds them beside the compiled detectors (setup.py into every wheel,
scripts/setup.sh into the checkout), as Cython twins of the readers
``schemas/avro_decoder.py`` generates; each carries the digest of the plain source it stands
for, and the decoder uses a twin only for a reader whose digest it matches (same schema, same
generator). Without a build, or with ``TRIPWIRE_PURE_DETECTORS=1``, the generated Python runs:
the same values and errors, ~3.5x slower.
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig
from pathlib import Path

from tripwire.detectors import COMPILED_DIR, PURE_ENV, build_manifest
from tripwire.schemas.avro_decoder import install_compiled


def load(directory: Path = COMPILED_DIR) -> str:
    """Install the twins built into ``directory``; one line saying what runs."""
    if os.environ.get(PURE_ENV):
        return f"generated Python ({PURE_ENV} is set)"
    manifest, why = build_manifest(directory)
    if why:
        return f"generated Python ({why})"
    try:
        names = list(manifest.get("avro_readers", {}))
    except (TypeError, AttributeError) as e:
        return f"generated Python (no usable compiled build ({e}))"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    modules = []
    for name in names:
        spec = importlib.util.spec_from_file_location(name, directory / f"{name}{suffix}")
        try:
            if spec is None or spec.loader is None:
                raise ImportError("no loader")
            module = importlib.util.module_from_spec(spec)  # loads the shared object
            spec.loader.exec_module(module)
        except (ImportError, OSError) as e:
            return f"generated Python (compiled reader {name} does not load: {e})"
        modules.append(module)
    if not modules:
        return "generated Python (no compiled readers in the build)"
    install_compiled(modules)
    return f"compiled twins installed ({', '.join(names)})"


RUNNING = load()
"""What decodes agent-steps Avro in this process, in one line."""
