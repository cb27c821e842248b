"""Shared fixtures: a real embedded broker (tansu) per test session, real chDB per test."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

import tripwire.detectors as detectors
from tripwire.schemas.topics import TopicSpec, ensure_topics
from tripwire.streams.broker import EmbeddedBroker, free_port

pytest_plugins = ["chdb_fixtures"]

# No property test may fail for taking long: hypothesis's default 200 ms deadline per example
# failed a codec test at 450 ms on a loaded machine (9 ms on the rerun). Slowness is measured
# by the benchmarks, not judged here.
settings.register_profile("tripwire", deadline=None)
settings.load_profile("tripwire")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(port=free_port(), log_path=log) as b:
        yield b


@pytest.fixture
def make_topics(broker: EmbeddedBroker):
    """Create uniquely named topics for one test: ``make_topics(("steps", 8), ...)``."""

    def make(*specs: tuple[str, int], compacted: bool = False) -> dict[str, str]:
        suffix = uuid.uuid4().hex[:8]
        names = {base: f"{base}-{suffix}" for base, _ in specs}
        cfg = {"cleanup.policy": "compact"} if compacted else {}
        asyncio.run(
            ensure_topics(broker.bootstrap, [TopicSpec(names[b], n, cfg) for b, n in specs])
        )
        return names

    return make


# Plain helpers (not fixtures) that several test modules import: ``from conftest import ...``.


class ListSink:
    """An in-memory step sink for ``AgentSession``: keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> bool:
        self.events.append(event)
        return True

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait in the test's event loop until ``condition()`` holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
def current_build() -> Path:
    """This checkout's build of the compiled detectors and Avro readers, made again if its
    sources changed since (what scripts/setup.sh does): the build the rest of the suite runs.
    Skips where there is no Cython or C compiler (only the pure-Python modules exist there)."""
    try:
        import Cython  # noqa: F401
    except ImportError:
        pytest.skip("Cython is not installed: only the pure-Python detectors exist here")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): only the pure-Python detectors exist here")
    target = detectors.COMPILED_DIR
    build = Path(__file__).resolve().parent.parent / "compile_detectors.py"
    done = subprocess.run([sys.executable, str(build), "--if-stale", str(target)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return target
