"""Stored steps streamed back out of ClickHouse as the events the detectors take.

For ``tripwire backtest``: one query over the window, ordered by (agent_id, ts, step), read
in column blocks (clickhouse-connect's ``query_column_block_stream``), so memory holds one
block whatever the window's size, and each block is turned into event dicts in one pass.

What a stored row gives back, and what it cannot:

* Absent optional fields are stored as '' or 0 (``sinks/sql/0001_steps.sql``); they are read
  back as None (``nullIf``), which is what the detectors test for. An event that really
  carried a cost or token count of exactly 0 is read as "no cost" — the spend detector treats
  both alike except on a ``run_end``, where a stored 0 marks the run ended as None does.
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
from collections.abc import Iterator
from itertools import islice
from operator import eq
from typing import Any

from tripwire.sinks.clickhouse import Client

BLOCK_ROWS = 65_536
"""Rows per block: the default ClickHouse block size; ~0.3 s of replay, a few MB."""

# (alias, expression) in the order the decoder unpacks them.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("agent_id", "agent_id"),
    ("workflow", "workflow"),
    ("event_id", "toString(event_id)"),
    ("ts", "toUnixTimestamp64Milli(ts)"),
    ("run_id", "run_id"),
    ("step", "step"),
    ("kind", "kind"),
    ("tool", "nullIf(tool, '')"),
    ("params_hash", "nullIf(params_hash, '')"),
    ("policy_outcome", "nullIf(policy_outcome, '')"),
    ("input_tokens", "nullIf(input_tokens, 0)"),
    ("output_tokens", "nullIf(output_tokens, 0)"),
    ("cost_usd", "nullIf(cost_usd, 0)"),
    ("content", "nullIf(content, '')"),
    ("source_trust", "nullIf(source_trust, '')"),
    ("injection_flagged", "injection_flagged"),
    ("decided_by", "attributes['decided_by']"),
    ("agent_version", "nullIf(agent_version, '')"),
    ("action_class", "nullIf(action_class, '')"),
    ("approver", "nullIf(approver, '')"),
    ("approved", "approved"),
    ("decline_reason", "attributes['decline_reason']"),
)


def history_query(agent: str | None = None, workflow: str | None = None) -> str:
    where = ["ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')",
             "ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')"]
    if agent is not None:
        where.append("agent_id = {agent:String}")
    if workflow is not None:
        where.append("workflow = {workflow:String}")
    # No aliases: an alias named like a column (ts) would replace it in WHERE and ORDER BY.
    select = ", ".join(expr for _, expr in _COLUMNS)
    return (f"SELECT {select} FROM steps WHERE {' AND '.join(where)} "
            "ORDER BY agent_id, ts, step, event_id")


def count_steps(client: Client, from_ms: int, to_ms: int, agent: str | None = None,
                workflow: str | None = None) -> int:
    sql = history_query(agent, workflow).split(" FROM ", 1)[1].split(" ORDER BY ", 1)[0]
    return int(client.query(f"SELECT count() FROM {sql}", parameters=_params(
        from_ms, to_ms, agent, workflow)).result_rows[0][0])


def agent_chunks(
    client: Client,
    from_ms: int,
    to_ms: int,
    agent: str | None = None,
    workflow: str | None = None,
    block_rows: int = BLOCK_ROWS,
) -> Iterator[tuple[str, str | None, list[dict[str, Any]], list[int]]]:
    """(agent_id, workflow, events, their ts) chunks in (agent_id, ts, step) order; an agent's
    events may span several chunks, always consecutive."""
    stream = client.query_column_block_stream(
        history_query(agent, workflow), parameters=_params(from_ms, to_ms, agent, workflow),
        settings={"max_block_size": block_rows})
    last_id: str | None = None
    with stream:
        for block in stream:
            yield from _chunks(block, last_id)
            if block and block[0]:
                last_id = block[2][-1]


def _params(from_ms: int, to_ms: int, agent: str | None, workflow: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"from_ms": from_ms, "to_ms": to_ms}
    if agent is not None:
        params["agent"] = agent
    if workflow is not None:
        params["workflow"] = workflow
    return params


def _chunks(block: list, last_id: str | None
            ) -> Iterator[tuple[str, str | None, list[dict[str, Any]], list[int]]]:
    agents, workflows, ids, ts = block[0], block[1], block[2], block[3]
    # Dict displays in one comprehension: the cheapest way CPython has to build a dict per row
    # (measured: about half the cost of dict(zip(names, row))).
    events = [
        {"event_id": e, "ts": t, "run_id": r, "step": s, "kind": k, "tool": tl,
         "params_hash": p, "policy_outcome": po, "input_tokens": it, "output_tokens": ot,
         "cost_usd": c, "content": ct, "source_trust": st, "injection_flagged": inj,
         "attributes": _attributes(d, dr) if d or dr else None, "agent_version": v,
         "action_class": ac, "approver": ap, "approved": ok}
        for e, t, r, s, k, tl, p, po, it, ot, c, ct, st, inj, d, v, ac, ap, ok, dr
        in zip(*block[2:], strict=True)
    ]
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
