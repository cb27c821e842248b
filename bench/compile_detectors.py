"""Build the optional compiled detectors: the replay's hot modules through Cython, unchanged.

    .venv/bin/python -m tripwire.bench.compile_detectors [DIR]   # build/compiled-detectors
    TRIPWIRE_COMPILED_DETECTORS=DIR .venv/bin/python -m tripwire.bench.backtest ...

Why optional: Tripwire installs with ``pip install`` on machines without a compiler, so the
pure-Python detectors are what every install runs, and they stay the reference. This build is
for whoever wants the last ~25 % of a replay's CPU (``tripwire backtest`` on a long window, the
backtest benchmark): it needs Cython (the ``test`` and ``bench`` extras) and a C compiler,
writes extension modules and a manifest into DIR, and changes nothing else. A process loads
them only when ``TRIPWIRE_COMPILED_DETECTORS`` names DIR, and only if DIR was built from
exactly the sources beside the package for the same interpreter (``detectors/__init__.py``);
otherwise it says why on stderr and runs the pure-Python modules.

The sources are compiled as they are (``annotation_typing=False``: type hints stay hints, so
ints stay Python ints and floats stay doubles, and results are the pure-Python ones;
tests/test_compiled_detectors.py runs the property tests against the build).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import tripwire.detectors
from tripwire.detectors import COMPILED_MODULES

DEFAULT_DIR = "build/compiled-detectors"


def sources() -> Path:
    """The directory of the pure-Python detector modules (not a compiled build's)."""
    return Path(tripwire.detectors.__file__).resolve().parent


def build(target: Path) -> Path:
    """Compile ``COMPILED_MODULES`` into ``target`` (replaced as a whole); returns it. Raises
    RuntimeError saying what is missing (Cython, a compiler) or what failed."""
    try:
        import Cython  # noqa: F401
    except ImportError as e:
        raise RuntimeError("Cython is not installed (pip install -e '.[bench]')") from e
    compiler = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(compiler.split()[0]) is None:
        raise RuntimeError(f"no C compiler ({compiler.split()[0]}) on PATH")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    here = sources()
    with tempfile.TemporaryDirectory(prefix="tripwire-cython-") as tmp:
        work = Path(tmp)
        names = []
        for name in COMPILED_MODULES:
            shutil.copyfile(here / f"{name}.py", work / f"{name}.py")
            names.append(f"{name}.py")
        done = subprocess.run(
            [sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-3", "-j", "2",
             "-X", "annotation_typing=False", *names],
            cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"cythonize failed:\n{(done.stdout + done.stderr)[-3000:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".compiled-", dir=target.parent))
        staged.chmod(0o755)  # mkdtemp's 0700 would hide the build from other users
        for name in COMPILED_MODULES:
            shutil.copyfile(work / f"{name}{suffix}", staged / f"{name}{suffix}")
        manifest = {
            "ext_suffix": suffix,
            "sources": {name: hashlib.sha256((here / f"{name}.py").read_bytes()).hexdigest()
                        for name in COMPILED_MODULES},
        }
        (staged / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if target.exists():
        shutil.rmtree(target)
    staged.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", nargs="?", default=DEFAULT_DIR,
                   help=f"where to write the build (default: {DEFAULT_DIR})")
    args = p.parse_args(argv)
    try:
        target = build(Path(args.dir).resolve())
    except RuntimeError as e:
        print(f"tripwire: compiled detectors not built: {e}", file=sys.stderr)
        return 1
    print(f"compiled {len(COMPILED_MODULES)} detector modules into {target}; use them with "
          f"TRIPWIRE_COMPILED_DETECTORS={target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
