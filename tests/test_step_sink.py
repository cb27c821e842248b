import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tripwire.schemas.step_columns import StepColumns
from tripwire.sinks.clickhouse import Client
from tripwire.sinks.step_sink import COLUMNS, StepSink
from tripwire.sinks.tabsep import QueryError, run_sql

pytestmark = pytest.mark.integration

# Recent, so the table's TTL cannot expire test rows while a test runs.
NOW_MS = int(time.time() * 1000)

_OPTIONAL = (
    "agent_version workflow owner environment tool action_class params_hash policy_outcome"
    " policy_rule model input_tokens output_tokens cost_usd latency_ms status outcome approver"
    " approved wait_ms content source_trust injection_flagged"
).split()


def step_event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = dict.fromkeys(_OPTIONAL)
    event.update(
        event_id=str(uuid.uuid4()),
        ts=NOW_MS,
        agent_id="agent-1",
        run_id="run-1",
        step=0,
        kind="tool_call",
        attributes={},
    )
    event.update(fields)
    return event


def batch(n: int, agents: int = 7, start_ms: int = NOW_MS) -> list[dict[str, Any]]:
    return [
        step_event(agent_id=f"agent-{i % agents}", run_id=f"run-{i % 31}", step=i, ts=start_ms + i)
        for i in range(n)
    ]


def count(client: Client, where: str = "1") -> int:
    return client.query(f"SELECT count() FROM steps WHERE {where}").result_rows[0][0]


def test_columns_are_stored_as_dashboards_read_them(ch_migrated: Client):
    full = step_event(
        ts=NOW_MS + 123,
        agent_version="1.4.2",
        environment="prod",
        kind="model_call",
        model="gpt-x",
        input_tokens=512,
        output_tokens=64,
        cost_usd=0.0125,
        latency_ms=870,
        status="ok",
        injection_flagged=True,
        attributes={"region": "eu"},
    )
    bare = step_event(kind="approval_decision", approved=False, wait_ms=0)
    assert StepSink(ch_migrated).insert([full, bare]) == 2
    rows = ch_migrated.query(
        "SELECT toUnixTimestamp64Milli(ts), kind, environment, model, input_tokens, cost_usd,"
        " latency_ms, approved, wait_ms, injection_flagged, attributes, content,"
        " ingested_at > now() - INTERVAL 1 HOUR"
        " FROM steps ORDER BY kind"
    ).result_rows
    assert rows == [
        (NOW_MS, "approval_decision", "", "", 0, 0.0, None, False, 0, False, {}, "", True),
        (NOW_MS + 123, "model_call", "prod", "gpt-x", 512, 0.0125, 870, None, None, True,
         {"region": "eu"}, "", True),
    ]  # fmt: skip


def test_same_batch_twice_is_stored_once_without_final(ch_migrated: Client):
    events = batch(5000)
    sink = StepSink(ch_migrated)
    assert sink.insert(events) == 5000
    assert sink.insert(events) == 0
    assert count(ch_migrated) == 5000


def test_restarted_worker_skips_what_it_stored_before_the_crash(ch_migrated: Client):
    events = batch(300)
    assert StepSink(ch_migrated).insert(events[:200]) == 200
    # A new sink (new process after a crash) is re-delivered from before the last
    # commit: the first 200 come again, mixed with 100 it never stored.
    assert StepSink(ch_migrated).insert(events[100:]) == 100
    assert count(ch_migrated) == 300
    assert ch_migrated.query("SELECT uniqExact(event_id) FROM steps").result_rows[0][0] == 300


def test_duplicates_inside_one_batch_are_stored_once(ch_migrated: Client):
    event = step_event()
    again = dict(event, event_id=str(event["event_id"]).upper())
    assert StepSink(ch_migrated).insert([event, again, dict(event)]) == 1
    assert count(ch_migrated) == 1


def test_redelivered_stragglers_far_apart_in_time_are_found(ch_migrated: Client):
    events = batch(50)
    events[3]["ts"] = NOW_MS - 6 * 3600 * 1000  # a late event from hours ago
    events[7]["ts"] = NOW_MS - 86400 * 1000  # and one from another day (partition)
    events[9]["ts"] = NOW_MS + 3600 * 1000  # and a producer clock running ahead
    sink = StepSink(ch_migrated)
    assert sink.insert(events) == 50
    assert sink.insert(list(reversed(events))) == 0
    assert count(ch_migrated) == 50


def test_a_batch_from_thousands_of_agents_is_checked_in_parts(ch_migrated: Client):
    # ~150 KiB of agent ids: more than one query parameter may carry over HTTP.
    events = [step_event(agent_id=f"agent-{i:05d}-{'x' * 40}", ts=NOW_MS + i) for i in range(3000)]
    sink = StepSink(ch_migrated)
    assert sink.insert(events) == 3000
    assert sink.insert(events) == 0
    assert count(ch_migrated) == 3000


def test_an_event_id_that_is_not_a_uuid_is_stored_and_still_deduplicated(ch_migrated: Client):
    event = step_event(event_id="not-a-uuid")
    sink = StepSink(ch_migrated)
    assert sink.insert([event]) == 1
    assert sink.insert([event]) == 0
    assert count(ch_migrated) == 1


def test_concurrent_inserts_of_overlapping_batches_store_each_event_once(ch_migrated: Client):
    events = batch(2000)
    sink = StepSink(ch_migrated)
    slices = [events[i : i + 600] for i in range(0, 2000, 350)]
    with ThreadPoolExecutor(4) as pool:
        stored = sum(pool.map(sink.insert, slices))
    assert stored == 2000
    assert count(ch_migrated) == 2000


def test_without_the_check_only_final_hides_duplicates(ch_migrated: Client):
    # What the check prevents: ReplacingMergeTree alone leaves copies until a merge.
    events = batch(100)
    sink = StepSink(ch_migrated, check_stored=False)
    sink.insert(events)
    sink.insert(events)
    assert count(ch_migrated) == 200
    assert ch_migrated.query("SELECT count() FROM steps FINAL").result_rows[0][0] == 100


def test_secrets_are_masked_before_they_are_stored(ch_migrated: Client):
    event = step_event(
        content="login with password=hunter2 then mail bob@example.com, key AKIAIOSFODNN7EXAMPLE",
        attributes={"api_key": "plainvalue42", "note": "card 4111 1111 1111 1111", "env": "prod"},
    )
    StepSink(ch_migrated).insert([event])
    content, attributes = ch_migrated.query("SELECT content, attributes FROM steps").result_rows[0]
    assert content == "login with password=[SECRET] then mail [EMAIL], key [AWS_KEY]"
    assert attributes == {"api_key": "[SECRET]", "note": "card [CARD]", "env": "prod"}
    for secret in ("hunter2", "bob@example.com", "AKIAIOSFODNN7EXAMPLE", "plainvalue42", "4111"):
        where = f"position(concat(content, toString(attributes)), '{secret}') > 0"
        assert count(ch_migrated, where) == 0


def test_empty_batch_is_a_no_op(ch_migrated: Client):
    assert StepSink(ch_migrated).insert([]) == 0


def run(client: Client, sql: str) -> str:
    out = io.StringIO()
    run_sql(client, sql, out)
    return out.getvalue()


def test_sql_prints_tab_separated_like_clickhouse_client(ch_migrated: Client):
    StepSink(ch_migrated).insert([step_event(content="tab\there\nnew line \\ back", step=3)])
    assert run(ch_migrated, "SELECT step, content, NULL, approved FROM steps") == (
        "3\ttab\\there\\nnew line \\\\ back\t\\N\t\\N\n"
    )
    assert run(ch_migrated, "SELECT number, [number], 'ü' FROM numbers(2);") == (
        "0\t[0]\tü\n1\t[1]\tü\n"
    )
    assert run(ch_migrated, "SELECT 'a%b' LIKE '%b', '{x}'") == "1\t{x}\n"
    assert run(ch_migrated, "SELECT 1 AS x FORMAT JSONEachRow") == '{"x":1}\n'
    assert run(ch_migrated, "CREATE TABLE extra (x UInt8) ENGINE = Memory") == ""


def test_sql_errors_carry_clickhouse_message(ch_migrated: Client):
    with pytest.raises(QueryError, match=r"^Code: 60\..*UNKNOWN_TABLE"):
        run(ch_migrated, "SELECT * FROM no_such_table")
    with pytest.raises(QueryError, match="SYNTAX_ERROR|Syntax error"):
        run(ch_migrated, "SELEC 1")


class CountingClient:
    """The real client, counting the queries the sink asks (its "already stored?" checks)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.queries = 0

    def query(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return self.client.query(*args, **kwargs)

    def insert_arrow(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.insert_arrow(*args, **kwargs)


def from_kafka(events: list[dict[str, Any]], partition: int, first_offset: int) -> StepColumns:
    cols = StepColumns(COLUMNS)
    for i, event in enumerate(events):
        cols.append_events([event], partition, first_offset + i)
    return cols


def test_a_partition_found_new_skips_the_check_until_it_re_delivers(ch_migrated: Client):
    client = CountingClient(ch_migrated)
    sink = StepSink(client)  # type: ignore[arg-type]
    events = batch(400)
    assert sink.insert_columns(from_kafka(events[:100], 0, 0)) == 100
    assert client.queries == 1, "a partition's first rows are checked"
    assert sink.insert_columns(from_kafka(events[100:200], 0, 100)) == 100
    assert sink.insert_columns(from_kafka(batch(50), 1, 0)) == 50
    assert client.queries == 2, "partition 0 was found new, partition 1 is new to the sink"
    # Offsets at or below what was inserted: a re-delivery, checked and dropped.
    assert sink.insert_columns(from_kafka(events[150:300], 0, 150)) == 100
    assert client.queries == 3
    sink.recheck()  # the partitions changed hands: the next rows of each are checked
    assert sink.insert_columns(from_kafka(events[300:350], 0, 300)) == 50
    assert client.queries == 4
    assert count(ch_migrated) == 400


def test_a_partition_whose_rows_were_stored_stays_checked(ch_migrated: Client):
    client = CountingClient(ch_migrated)
    events = batch(300)
    StepSink(ch_migrated).insert_columns(from_kafka(events[:200], 0, 0))  # the crashed worker
    sink = StepSink(client)  # type: ignore[arg-type]
    assert sink.insert_columns(from_kafka(events[:100], 0, 0)) == 0
    assert sink.insert_columns(from_kafka(events[100:250], 0, 100)) == 50
    assert sink.insert_columns(from_kafka(events[250:], 0, 250)) == 50
    assert client.queries == 3, "checked until a batch of the partition was all new"
    assert count(ch_migrated) == 300


def test_a_failed_insert_has_its_partitions_checked_again(ch_migrated: Client):
    class SecondInsertFails(CountingClient):
        inserts = 0

        def insert_arrow(self, *args: Any, **kwargs: Any) -> Any:
            result = self.client.insert_arrow(*args, **kwargs)
            self.inserts += 1
            if self.inserts == 2:  # stored, but reported failed
                raise RuntimeError("connection reset")
            return result

    client = SecondInsertFails(ch_migrated)
    sink = StepSink(client)  # type: ignore[arg-type]
    events = batch(200)
    sink.insert_columns(from_kafka(events[:100], 0, 0))
    with pytest.raises(RuntimeError):
        sink.insert_columns(from_kafka(events[100:], 0, 100))
    assert sink.insert_columns(from_kafka(events[100:], 0, 100)) == 0, "the retry finds them"
    assert count(ch_migrated) == 200


# --- the Arrow insert against the column rules as a reference -------------------------------

_TEXTS = st.one_of(st.none(), st.text(max_size=12))
_SECRETS = st.sampled_from(["", "mail bob@example.com now", "password=hunter2",
                            "card 4111 1111 1111 1111", "key AKIAIOSFODNN7EXAMPLE x"])


@st.composite
def stored_events(draw: st.DrawFn) -> dict[str, Any]:
    """StepEvents as the stream hands them to the sink: any mix of absent and present
    optional fields, free text with and without secrets."""
    event = step_event(
        event_id=draw(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()),
                                st.text(min_size=1, max_size=8))),
        ts=NOW_MS - draw(st.integers(0, 10 * 86_400_000)),
        agent_id=draw(st.text(min_size=1, max_size=6)),
        run_id=draw(st.text(max_size=6)),
        step=draw(st.integers(-(2**31), 2**31 - 1)),
        kind=draw(st.sampled_from(["tool_call", "model_call", "run_end"])),
        attributes=draw(st.one_of(st.none(), st.dictionaries(
            st.sampled_from(["region", "api_token", "note", ""]),
            st.one_of(st.text(max_size=8), _SECRETS), max_size=3))),
    )
    for name in ("agent_version", "workflow", "owner", "environment", "tool", "action_class",
                 "params_hash", "policy_outcome", "policy_rule", "model", "status", "outcome",
                 "approver", "source_trust"):
        event[name] = draw(_TEXTS)
    for name in ("input_tokens", "output_tokens", "latency_ms", "wait_ms"):
        event[name] = draw(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)))
    event["cost_usd"] = draw(st.one_of(st.none(), st.floats(allow_nan=False)))
    event["approved"] = draw(st.one_of(st.none(), st.booleans()))
    event["injection_flagged"] = draw(st.one_of(st.none(), st.booleans()))
    event["content"] = draw(st.one_of(st.none(), st.text(max_size=20), _SECRETS))
    return event


def reference_row(event: dict[str, Any]) -> tuple[Any, ...]:
    """The stored row by the rules the sink applied before Arrow (its list columns for the
    driver's Native format): absent text '' and absent numbers 0, Nullable columns keep
    None, content and attribute values masked."""
    import uuid as uuid_module

    from tripwire.sinks.masking import mask, mask_attributes
    from tripwire.sinks.step_sink import _event_key

    row: list[Any] = [uuid_module.UUID(_event_key(event["event_id"])), event["ts"],
                      event["agent_id"], event["run_id"], event["step"], event["kind"]]
    row += [event[name] or "" for name in ("agent_version", "workflow", "owner", "environment",
                                           "tool", "action_class", "params_hash",
                                           "policy_outcome", "policy_rule", "model", "status",
                                           "outcome", "approver", "source_trust")]
    row += [event[name] or 0 for name in ("input_tokens", "output_tokens", "cost_usd")]
    row += [event["latency_ms"], event["approved"], event["wait_ms"]]
    row += [mask(event["content"]) if event["content"] else "",
            bool(event["injection_flagged"]), mask_attributes(event["attributes"])]
    return tuple(row)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events=st.lists(stored_events(), min_size=1, max_size=12,
                       unique_by=lambda e: e["event_id"].lower()))
def test_stored_rows_follow_the_column_rules(ch_migrated: Client,
                                             events: list[dict[str, Any]]) -> None:
    ch_migrated.command("TRUNCATE TABLE steps")
    assert StepSink(ch_migrated, check_stored=False).insert(events) == len(
        {reference_row(e)[0] for e in events})
    stored = ch_migrated.query(
        "SELECT event_id, toUnixTimestamp64Milli(ts), agent_id, run_id, step, kind,"
        " agent_version, workflow, owner, environment, tool, action_class, params_hash,"
        " policy_outcome, policy_rule, model, status, outcome, approver, source_trust,"
        " input_tokens, output_tokens, cost_usd, latency_ms, approved, wait_ms, content,"
        " injection_flagged, attributes FROM steps").result_rows
    expected = {reference_row(e)[0]: reference_row(e) for e in events}
    assert sorted(stored, key=lambda r: str(r[0])) == sorted(
        expected.values(), key=lambda r: str(r[0]))
