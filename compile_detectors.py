"""Compile the replay's hot detector modules with Cython, unchanged, beside a manifest of the
exact sources they were built from.

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


class Unavailable(RuntimeError):
    """The build cannot be made here (no Cython, no C compiler) or failed; says which."""


def manifest_of(sources: Path) -> dict[str, object]:
    """What a build of ``sources`` records: the interpreter's extension suffix and the digest
    of each compiled module's source."""
    return {
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "sources": {name: hashlib.sha256((sources / f"{name}.py").read_bytes()).hexdigest()
                    for name in MODULES},
    }


def is_current(target: Path, sources: Path) -> bool:
    """Whether ``target`` holds a build of exactly ``sources`` for this interpreter."""
    try:
        kept = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return kept == manifest_of(sources) and all(
        (target / f"{name}{suffix}").is_file() for name in MODULES)


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


def build(sources: Path, target: Path) -> Path:
    """Compile ``MODULES`` of ``sources`` into ``target``, replacing it whole (a reader sees
    the old build or the new one, never half of one). Raises :class:`Unavailable`."""
    why = unavailable()
    if why:
        raise Unavailable(why)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    manifest = manifest_of(sources)
    with tempfile.TemporaryDirectory(prefix="tripwire-cython-") as tmp:
        work = Path(tmp)
        for name in MODULES:
            shutil.copyfile(sources / f"{name}.py", work / f"{name}.py")
        done = subprocess.run(
            [sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-3",
             "-j", str(min(4, os.cpu_count() or 1)), "-X", "annotation_typing=False",
             *(f"{name}.py" for name in MODULES)],
            cwd=work, capture_output=True, text=True,
            # No debug information: 10.2 -> 1.7 MB of modules in the wheel.
            env={**os.environ, "CFLAGS": f"{os.environ.get('CFLAGS', '')} -g0".strip()})
        if done.returncode != 0:
            raise Unavailable(f"cythonize failed:\n{(done.stdout + done.stderr)[-3000:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".compiled-", dir=target.parent))
        staged.chmod(0o755)  # mkdtemp makes it 0700: an installed package is read by others
        for name in MODULES:
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
    args = p.parse_args(argv)
    if args.if_stale and is_current(args.dir, args.sources):
        return 0
    try:
        build(args.sources, args.dir)
    except Unavailable as e:
        print(not_built(e), file=sys.stderr)
        return 1
    print(f"tripwire: compiled {len(MODULES)} detector modules into {args.dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
