"""Stored steps streamed back out of ClickHouse as the events the detectors take.

For ``tripwire backtest``: one query over the window, ordered by (agent_id, ts, step), read
in column blocks (clickhouse-connect's ``query_column_block_stream``), so memory holds one
block whatever the window's size, and each block is turned into event dicts in one pass.

What a stored row gives back, and what it cannot:

* Absent optional fields are stored as '' or 0 (``sinks/sql/0001_steps.sql``); the event read
  back simply has no such key (the query returns a presence mask per row), and the detectors
  read every optional field with ``event.get``, so it reads as None, which is what they test
  for (``tests/test_sparse_events.py`` holds the monitor to the same decisions on such events
  as on the stream's full ones). An event that really carried a cost or token count of
  exactly 0 is read as "no cost" — the spend detector treats both alike except on a
  ``run_end``, where a stored 0 marks the run ended as None does.
* Only the keys the caller asks for are read (``keys``: ``detectors.backtest.event_keys``
  names those the two policies read, e.g. no ``action_class`` without rate caps).
* ``content`` is stored masked, so the injection scanner sees the masked text.
* Only ``attributes.decided_by`` and ``attributes.decline_reason`` are read: the attributes
  the monitor looks at (``detectors/denial_rate.py``, the approval inbox's decisions, and
  earned autonomy's expired requests in ``detectors/autonomy.py``). ``agent_version`` (version
  containment, earned autonomy per version), ``action_class`` (rate caps) and ``approver`` /
  ``approved`` (earned autonomy) are read for the breaker's side.
* Rows are deduplicated by event_id (a re-delivered event the table has not merged yet).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from operator import eq
from typing import Any

from tripwire.sinks.clickhouse import Client

BLOCK_ROWS = 65_536
"""Rows per block: the default ClickHouse block size; ~0.3 s of replay, a few MB."""

ALWAYS = ("event_id", "ts", "run_id", "step", "kind")
"""Keys every event has (the detectors index them)."""

# Optional keys: (key, value expression(s), presence test). An event gets a key only where
# the stored row has a value: every detector reads optional fields with ``event.get``, so an
# absent key reads as None, exactly like the stored '' or 0 read back as None before. Dicts
# of only the keys an event has are about half the size (the bench dataset: 8-10 keys of 19)
# and cost half as much to build (measured on 65,536 rows: 0.87 us a row for the 19-key
# display, 0.52 for the per-pattern displays below).
_OPTIONAL: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("tool", ("tool",), "tool != ''"),
    ("params_hash", ("params_hash",), "params_hash != ''"),
    ("policy_outcome", ("policy_outcome",), "policy_outcome != ''"),
    ("input_tokens", ("input_tokens",), "input_tokens != 0"),
    ("output_tokens", ("output_tokens",), "output_tokens != 0"),
    ("cost_usd", ("cost_usd",), "cost_usd != 0"),
    ("content", ("content",), "content != ''"),
    ("source_trust", ("source_trust",), "source_trust != ''"),
    # Present only where true: the mask says it all, no column to read.
    ("injection_flagged", (), "injection_flagged"),
    ("attributes", ("attributes['decided_by']", "attributes['decline_reason']"),
     "attributes['decided_by'] != '' OR attributes['decline_reason'] != ''"),
    ("agent_version", ("agent_version",), "agent_version != ''"),
    ("action_class", ("action_class",), "action_class != ''"),
    ("approver", ("approver",), "approver != ''"),
    ("approved", ("approved",), "isNotNull(approved)"),
)
KEYS = ALWAYS + tuple(key for key, _, _ in _OPTIONAL)
"""Every key an event read back may have."""



def _optional(keys: frozenset[str] | None) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    return tuple(o for o in _OPTIONAL if keys is None or o[0] in keys)


def history_query(agent: str | None = None, workflow: str | None = None,
                  keys: frozenset[str] | None = None) -> str:
    """The query ``agent_chunks`` runs: agent_id, workflow, the presence mask of the optional
    keys (bit i: ``keys``' i-th optional key has a value), the five keys every event has, then
    the optional keys' values."""
    where = ["ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')",
             "ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')"]
    if agent is not None:
        where.append("agent_id = {agent:String}")
    if workflow is not None:
        where.append("workflow = {workflow:String}")
    optional = _optional(keys)
    mask = " + ".join(f"toUInt32({test}) * {1 << bit}"
                      for bit, (_, _, test) in enumerate(optional)) or "toUInt32(0)"
    # No aliases: an alias named like a column (ts) would replace it in WHERE and ORDER BY.
    # run_id as LowCardinality: a run's rows then share one str object (read faster, 0.11
    # against 0.15 us a row, and its hash is computed once for every run-table lookup).
    select = ", ".join(["agent_id", "workflow", mask, "toString(event_id)",
                        "toUnixTimestamp64Milli(ts)", "toLowCardinality(run_id)", "step", "kind"]
                       + [expr for _, exprs, _ in optional for expr in exprs])
    return (f"SELECT {select} FROM steps WHERE {' AND '.join(where)} "
            "ORDER BY agent_id, ts, step, event_id")


def count_steps(client: Client, from_ms: int, to_ms: int, agent: str | None = None,
                workflow: str | None = None) -> int:
    sql = history_query(agent, workflow).split(" FROM steps ", 1)[1].split(" ORDER BY ", 1)[0]
    return int(client.query(f"SELECT count() FROM steps {sql}", parameters=_params(
        from_ms, to_ms, agent, workflow)).result_rows[0][0])


def agent_chunks(
    client: Client,
    from_ms: int,
    to_ms: int,
    agent: str | None = None,
    workflow: str | None = None,
    block_rows: int = BLOCK_ROWS,
    keys: frozenset[str] | None = None,
) -> Iterator[tuple[str, str | None, list[dict[str, Any]], list[int]]]:
    """(agent_id, workflow, events, their ts) chunks in (agent_id, ts, step) order; an agent's
    events may span several chunks, always consecutive.

    ``keys``: the event keys the consumer reads (``detectors.backtest.event_keys``); the
    others are neither read nor put in the events. None: every key in ``KEYS``. Each event
    holds only the keys its stored row has a value for (and always ``ALWAYS``)."""
    decoder = _Decoder(_optional(keys))
    stream = client.query_column_block_stream(
        history_query(agent, workflow, keys),
        parameters=_params(from_ms, to_ms, agent, workflow),
        settings={"max_block_size": block_rows})
    last_id: str | None = None
    with stream:
        for block in stream:
            yield from _chunks(block, decoder, last_id)
            if block and block[0]:
                last_id = block[3][-1]


def _params(from_ms: int, to_ms: int, agent: str | None, workflow: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"from_ms": from_ms, "to_ms": to_ms}
    if agent is not None:
        params["agent"] = agent
    if workflow is not None:
        params["workflow"] = workflow
    return params


CHAINED_PATTERNS = 12
"""Presence patterns a block's events are built by dict displays for (the most frequent
first); rarer ones go through ``_Decoder.event``, a loop per key. The bench dataset has 7
patterns; every extra test in the chain costs every row of a rarer pattern ~20 ns."""


class _Decoder:
    """Turns a block's columns into events: one comprehension whose dict displays are
    generated for the block's presence patterns (a dict display is CPython's cheapest way to
    build a dict; ``dict(zip(keys, row))`` costs 1.5x more). Compiled once per set of
    patterns, kept for the next blocks, which nearly always have the same ones."""

    def __init__(self, optional: tuple[tuple[str, tuple[str, ...], str], ...]) -> None:
        # Per optional key: its name and the names of the variables its value is made from.
        self.slots: list[tuple[str, list[str]]] = []
        names = 0
        for key, exprs, _ in optional:
            self.slots.append((key, [f"v{names + i}" for i in range(len(exprs))]))
            names += len(exprs)
        self.values = [f"v{i}" for i in range(names)]
        self.built: dict[tuple[int, ...], Any] = {}

    def value(self, key: str, names: list[str]) -> str:
        if key == "attributes":
            return f"_attributes({', '.join(names)})"
        return names[0] if names else "True"

    def display(self, mask: int) -> str:
        items = ['"event_id": e', '"ts": t', '"run_id": r', '"step": s', '"kind": k']
        items += [f'"{key}": {self.value(key, names)}'
                  for bit, (key, names) in enumerate(self.slots) if mask >> bit & 1]
        return "{" + ", ".join(items) + "}"

    def builder(self, patterns: tuple[int, ...]) -> Any:
        build = self.built.get(patterns)
        if build is None:
            expr = f"_rest(m, e, t, r, s, k, ({', '.join(self.values)}{',' * bool(self.values)}))"
            for mask in reversed(patterns):
                expr = f"{self.display(mask)} if m == {mask} else {expr}"
            variables = ", ".join(["m", "e", "t", "r", "s", "k", *self.values])
            source = (f"def build(masks, columns):\n"
                      f"    return [{expr} for {variables} in zip(masks, *columns, strict=True)]")
            scope: dict[str, Any] = {"_attributes": _attributes, "_rest": self.event}
            exec(compile(source, "<step_history>", "exec"), scope)  # noqa: S102
            if len(self.built) > 64:
                self.built.clear()
            build = self.built[patterns] = scope["build"]
        return build

    def event(self, mask: int, e: str, t: int, r: str, s: int, k: str,
              values: tuple[Any, ...]) -> dict[str, Any]:
        """One event of a pattern the comprehension has no display for."""
        out: dict[str, Any] = {"event_id": e, "ts": t, "run_id": r, "step": s, "kind": k}
        at = 0
        for bit, (key, names) in enumerate(self.slots):
            if mask >> bit & 1:
                out[key] = (_attributes(*values[at:at + len(names)]) if key == "attributes"
                            else values[at] if names else True)
            at += len(names)
        return out

    def events(self, block: list) -> list[dict[str, Any]]:
        masks = block[2]
        # Every pattern the block has gets a display (a set of the masks: ~17 ns a row),
        # ordered by frequency in every 8th row (counting every row: ~32 ns): the order only
        # decides how soon a row finds its display. Choosing the patterns themselves from the
        # sample missed whole kinds when steps repeat with a period dividing 8: the bench
        # dataset's 16-step runs put only run starts and tool calls on every 8th row, so
        # model calls and decisions (44% of rows) went through the per-key fallback (read +
        # decode 2.52-2.63 -> 1.71-1.83 us a row on the 10M dataset's first 2M rows).
        present = set(masks)
        if len(present) > CHAINED_PATTERNS:
            ranked = [m for m, _ in Counter(masks).most_common(CHAINED_PATTERNS)]
        else:
            sampled = Counter(masks[::8])
            ranked = sorted(present, key=lambda m: -sampled.get(m, 0))
        return self.builder(tuple(ranked))(masks, block[3:])


def _chunks(block: list, decoder: _Decoder, last_id: str | None
            ) -> Iterator[tuple[str, str | None, list[dict[str, Any]], list[int]]]:
    agents, workflows, ids, ts = block[0], block[1], block[3], block[4]
    events = decoder.events(block)
    ts = list(ts)
    n = len(events)
    if _has_duplicates(ids, last_id):
        keep = [i for i in range(n) if ids[i] != (ids[i - 1] if i else last_id)]
        events = [events[i] for i in keep]
        ts = [ts[i] for i in keep]
        agents = [agents[i] for i in keep]
        workflows = [workflows[i] for i in keep]
        n = len(events)
    i = 0
    while i < n:
        agent = agents[i]
        # Rows are sorted by agent_id (bytewise in ClickHouse, code point order in Python:
        # the same for UTF-8), so an agent's rows end where bisection says.
        j = bisect_right(agents, agent, i)
        yield agent, workflows[i] or None, events[i:j], ts[i:j]
        i = j


def _attributes(decided_by: str, decline_reason: str) -> dict[str, str]:
    out = {"decided_by": decided_by} if decided_by else {}
    if decline_reason:
        out["decline_reason"] = decline_reason
    return out


def _has_duplicates(ids: list[str], last_id: str | None) -> bool:
    if ids and ids[0] == last_id:
        return True
    # Duplicates sort next to each other (same agent, ts, step and event_id), so comparing
    # neighbours in C finds them: ~0.03 us a row against ~0.15 for building a set of the ids.
    return any(map(eq, ids, islice(ids, 1, None)))
