"""Compile the replay's hot detector modules with Cython, unchanged, and the contract's hot
Avro readers, beside a manifest of the exact sources they were built from.

    python compile_detectors.py [--if-stale] DIR [--sources SRC]

Who runs it:

* ``setup.py``, for every wheel and every ``pip install .``: into the build's
  ``tripwire/detectors/compiled/``, from the sources that go into the same wheel;
* ``scripts/setup.sh``, for the editable checkout: into ``detectors/compiled/`` (ignored by git),
  again only when the sources changed (``--if-stale``).

Loading is ``detectors/__init__.py``'s: a build runs only if its manifest names exactly the
sources beside the package and this interpreter's extension suffix; otherwise the pure-Python
modules run (always correct, only slower). So an edited source is never shadowed by an old
build, and a machine without a C compiler installs and runs Tripwire as before.

Why compile: these modules are ~70 % of a backtest's replay CPU and of the worker's detector
time. Compiled unchanged (``annotation_typing=False``: type hints stay hints, ints stay Python
ints, floats doubles, so every result is the pure-Python one, which
tests/test_compiled_detectors.py checks byte for byte), the 10M-step backtest bench replays
~18 % more events per CPU second (README, "Backtest"). Compiling the rest of detectors/ as
well (breaker, autonomy, backtest, the injection counter, severity) added nothing measurable.

The Avro readers (:func:`avro_twins`) are the Cython twins of the readers
``schemas/avro_decoder.py`` generates for agent-steps records: the worker's (StepBatch and bare
StepEvent bodies) and its ClickHouse writer's (events straight into columns). Typed (byte reads,
lengths and varints are C integers), not compiled unchanged: the plain source compiled as it is
gained ~10 %, the twin reads a bench-fleet event into columns in ~1.4 us against ~5.1. Each
twin is named by a digest of its plain source and of the generator, and
``tripwire.streams`` installs only twins whose digest matches what this process would run; a
twin gives the plain reader's values and errors (tests/test_compiled_avro_readers.py).
Generating them imports ``tripwire.schemas`` (fastavro, pydantic) from ``schemas/`` beside
this file; where that fails the detectors are compiled alone, and the line printed says why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

MODULES = ("windows", "evidence", "runs", "loops", "spend", "denial_rate", "agent_monitor")
MANIFEST = "manifest.json"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# Run with the schemas package importable: prints {module: [digest of the plain source, Cython
# twin]} of each hot reader, as the worker and the writer build them (codec.py, step_columns.py).
_TWINS = r"""
import json, sys
from tripwire.schemas import avro_decoder as A
from tripwire.schemas.codec import StepBatchCodec

codec = StepBatchCodec()
event, batch = codec.event_codec._schema, codec.batch_codec._schema
specs = {
    "avro_step_batch": (batch, None, {}),
    "avro_step_event": (event, None, {}),
    "avro_step_columns": (event, event.get("__named_schemas"), {"columns": True}),
    "avro_step_frames": (event, event.get("__named_schemas"), {"frames": True}),
}
json.dump({name: [A.compiled_key(A.generate_source(schema, named, **kw)),
                  A.generate_cython_source(schema, named, **kw)]
           for name, (schema, named, kw) in specs.items()}, sys.stdout)
"""


def avro_twins(schemas: Path = SCHEMAS) -> tuple[dict[str, tuple[str, str]], str]:
    """({module: (key, Cython source)} of the hot readers (``_TWINS``), '') generated from
    ``schemas``; ({}, why not) where they cannot be."""
    if not (schemas / "avro_decoder.py").is_file():
        return {}, f"no schemas package at {schemas}"
    with tempfile.TemporaryDirectory(prefix="tripwire-twins-") as tmp:
        # tripwire.schemas from these very files, whatever else is installed
        shutil.copytree(schemas, Path(tmp) / "tripwire" / "schemas",
                        ignore=shutil.ignore_patterns("__pycache__"))
        done = subprocess.run([sys.executable, "-c", _TWINS], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": tmp}, cwd=tmp)
    if done.returncode != 0:
        return {}, f"generating them failed: {done.stderr.strip().splitlines()[-1:]}"
    twins = {name: (key, source) for name, (key, source) in json.loads(done.stdout).items()}
    return twins, ""


class Unavailable(RuntimeError):
    """The build cannot be made here (no Cython, no C compiler) or failed; says which."""


def manifest_of(sources: Path, twins: dict[str, tuple[str, str]]) -> dict[str, object]:
    """What a build of ``sources`` and ``twins`` records: the interpreter's extension suffix,
    the digest of each compiled detector module's source, and each Avro twin's key."""
    return {
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "sources": {name: hashlib.sha256((sources / f"{name}.py").read_bytes()).hexdigest()
                    for name in MODULES},
        "avro_readers": {name: key for name, (key, _) in twins.items()},
    }


def is_current(target: Path, sources: Path, twins: dict[str, tuple[str, str]]) -> bool:
    """Whether ``target`` holds a build of exactly ``sources`` and ``twins`` for this
    interpreter."""
    try:
        kept = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return kept == manifest_of(sources, twins) and all(
        (target / f"{name}{suffix}").is_file() for name in (*MODULES, *twins))


def unavailable() -> str:
    """Why a build cannot be made here, or '' if it can."""
    try:
        import Cython  # noqa: F401
    except ImportError:
        return "Cython is not installed"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}) on PATH"
    return ""


def not_built(why: object) -> str:
    """The line a build that could not be made prints (here and in setup.py)."""
    return f"tripwire: compiled detectors not built ({why}); the pure-Python ones run"


def build(sources: Path, target: Path, twins: dict[str, tuple[str, str]]) -> Path:
    """Compile ``MODULES`` of ``sources`` and the Avro ``twins`` (:func:`avro_twins`) into
    ``target``, replacing it whole (a reader sees the old build or the new one, never half of
    one). Raises :class:`Unavailable`."""
    why = unavailable()
    if why:
        raise Unavailable(why)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    manifest = manifest_of(sources, twins)
    with tempfile.TemporaryDirectory(prefix="tripwire-cython-") as tmp:
        work = Path(tmp)
        for name in MODULES:
            shutil.copyfile(sources / f"{name}.py", work / f"{name}.py")
        for name, (key, source) in twins.items():
            (work / f"{name}.pyx").write_text(f"{source}\nKEY = {key!r}\n")
        # annotation_typing=False keeps the detectors' hints hints; the twins declare C types
        # with cdef, which it leaves alone.
        done = subprocess.run(
            [sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-3",
             "-j", str(min(4, os.cpu_count() or 1)), "-X", "annotation_typing=False",
             *(f"{name}.py" for name in MODULES), *(f"{name}.pyx" for name in twins)],
            cwd=work, capture_output=True, text=True,
            # No debug information: 10.2 -> 1.7 MB of modules in the wheel.
            env={**os.environ, "CFLAGS": f"{os.environ.get('CFLAGS', '')} -g0".strip()})
        if done.returncode != 0:
            raise Unavailable(f"cythonize failed:\n{(done.stdout + done.stderr)[-3000:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".compiled-", dir=target.parent))
        staged.chmod(0o755)  # mkdtemp makes it 0700: an installed package is read by others
        for name in (*MODULES, *twins):
            shutil.copyfile(work / f"{name}{suffix}", staged / f"{name}{suffix}")
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    if target.exists():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        target.rename(old)
        staged.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staged.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, help="where the build goes (replaced whole)")
    p.add_argument("--sources", type=Path, default=Path(__file__).resolve().parent / "detectors",
                   help="the detector sources (default: this checkout's detectors/)")
    p.add_argument("--if-stale", action="store_true",
                   help="do nothing when DIR already holds a build of exactly these sources")
    p.add_argument("--schemas", type=Path, default=SCHEMAS,
                   help="the contract's sources, for the Avro readers (default: schemas/)")
    args = p.parse_args(argv)
    twins, why = avro_twins(args.schemas)
    if why:
        print(f"tripwire: compiled Avro readers not built ({why}); the generated Python runs",
              file=sys.stderr)
    if args.if_stale and is_current(args.dir, args.sources, twins):
        return 0
    try:
        build(args.sources, args.dir, twins)
    except Unavailable as e:
        print(not_built(e), file=sys.stderr)
        return 1
    print(f"tripwire: compiled {len(MODULES)} detector modules and {len(twins)} Avro readers "
          f"into {args.dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
