"""`python -m tripwire.bench.masking`: what masking costs the sink per stored row.

Rows, in the proportions of a fleet whose steps carry tool output:

* **fleet**: the simulator's steps (short content, small attributes), as they are;
* **tool output**: 1-2 KB texts made of the standard library's own documentation (prose with
  code, numbers, paths) and JSON tool results, the shape of what agents read;
* **planted**: tests/masking_corpus.py's sentences (vendor secrets, personal data), one row
  in twenty.

Each row costs ``mask(content)`` plus ``mask_attributes(attributes)``. The ceiling printed
beside it is measured in the same run on the same rows: decoding the row's Avro frame
(``StepBatchCodec.decode``), work the sink does for every row anyway. Compare the ratio, not
the microseconds: the machine is shared.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tripwire.schemas.codec import StepBatchCodec
from tripwire.simulator.fleet import fleet_events
from tripwire.simulator.scenarios import SCENARIOS
from tripwire.sinks.masking import mask, mask_attributes

ROOT = Path(__file__).resolve().parent.parent


def _docs() -> list[str]:
    import collections
    import email.message
    import json as json_module
    import pathlib
    import urllib.parse

    texts = []
    for module in (collections, email.message, json_module, pathlib, urllib.parse, inspect):
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 200:
                texts.append(doc)
    return texts


def tool_outputs(n: int, rng: random.Random, fleet: list[dict[str, Any]]) -> list[str]:
    docs = _docs()
    out = []
    for i in range(n):
        if i % 3 == 0:
            sample = rng.sample(fleet, 4)
            text = json.dumps({"results": [{k: e[k] for k in ("event_id", "tool", "ts", "run_id")}
                                           for e in sample], "count": 4, "next": None})
        else:
            text = ""
            while len(text) < rng.randint(1000, 2000):
                text += rng.choice(docs) + "\n\n"
        out.append(text[:2048])
    return out


def rows(n: int, seed: int = 13) -> dict[str, list[dict[str, Any]]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from masking_corpus import all_planted

    rng = random.Random(seed)
    fleet = list(itertools.islice(fleet_events(seed=seed, agents=50, scenarios=SCENARIOS), n))
    tools = tool_outputs(n, rng, fleet)
    planted = all_planted()
    kinds: dict[str, list[dict[str, Any]]] = {"fleet": [], "tool output": [], "planted": []}
    for i, event in enumerate(fleet):
        if i % 20 == 0:
            p = planted[i // 20 % len(planted)]
            kinds["planted"].append(event | {"content": p.sentence,
                                             "attributes": {"note": p.sentence}})
        elif i % 2:
            kinds["tool output"].append(event | {"content": tools[i]})
        else:
            kinds["fleet"].append(event)
    return kinds


def per_row_us(fn: Callable[[dict[str, Any]], Any], batch: list[dict[str, Any]],
               repeats: int) -> float:
    best = []
    for _ in range(repeats):
        start = time.perf_counter()
        for row in batch:
            fn(row)
        best.append((time.perf_counter() - start) / len(batch) * 1e6)
    return statistics.median(best)


def _mask_row(row: dict[str, Any]) -> None:
    if row.get("content"):
        mask(row["content"])
    mask_attributes(row.get("attributes"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    codec = StepBatchCodec()
    kinds = rows(args.rows)
    everything = [r for batch in kinds.values() for r in batch]
    print(f"masking cost per stored row (median of {args.repeats} passes; ceiling = Avro"
          " decode of the same row, measured in the same run)")
    print(f"{'rows':<12} {'n':>6} {'avg chars':>9} {'mask µs/row':>12} {'decode µs/row':>14}"
          f" {'mask/decode':>11}")
    for name, batch in [*kinds.items(), ("all", everything)]:
        frames = {id(r): codec.encode([r]) for r in batch}
        masked = per_row_us(_mask_row, batch, args.repeats)
        decoded = per_row_us(lambda r, f=frames: codec.decode(f[id(r)]), batch, args.repeats)
        chars = statistics.mean(len(r.get("content") or "") for r in batch)
        print(f"{name:<12} {len(batch):>6} {chars:>9.0f} {masked:>12.1f} {decoded:>14.1f}"
              f" {masked / decoded:>11.2f}")


if __name__ == "__main__":
    main()
