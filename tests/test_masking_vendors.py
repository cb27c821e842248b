"""Secrets of vendors' published formats and personal data of many countries never reach
ClickHouse: unit, property and end-to-end tests over tests/masking_corpus.py."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from masking_corpus import Planted, all_planted, personal_data, vendor_secrets

from tripwire.sinks import masking, national_ids
from tripwire.sinks.masking import SECRET_RULES_FILE, mask, mask_attributes

PLANTED = all_planted()
COUNTRIES = {"us", "uk", "de", "fr", "es", "it", "nl", "pl", "se", "fi", "br", "ca", "in", "cn",
             "gb", "ch"}


def fragments(secret: str) -> list[str]:
    """What must not survive: the secret, and each of its lines (PEM blocks)."""
    return [secret, *(line for line in secret.splitlines() if len(line) >= 8)]


def leaked(planted: Planted, stored: str) -> bool:
    return any(f in stored for f in fragments(planted.secret))


def test_corpus_covers_sixty_vendor_formats_and_ten_countries() -> None:
    vendors = {p.kind.split(":")[-1] for p in vendor_secrets()}
    assert len(vendors) >= 60, len(vendors)
    countries = {part for p in personal_data() for part in p.kind.split("-")[:2]
                 if part in COUNTRIES}
    assert len(countries) >= 10, countries


def test_rule_file_records_its_source_and_version() -> None:
    data = json.loads(SECRET_RULES_FILE.read_text())
    assert "gitleaks" in data["source"] and data["version"] and len(data["commit"]) == 40
    assert "MIT" in data["license"]
    assert len(data["rules"]) >= 200


@pytest.mark.parametrize("planted", PLANTED, ids=[p.kind for p in PLANTED])
def test_planted_secret_is_masked_in_content_and_attributes(planted: Planted) -> None:
    masked = mask(planted.sentence)
    assert not leaked(planted, masked), masked
    assert "[" in masked, "a typed placeholder says what was there"
    attributes = mask_attributes({"note": planted.sentence, "db_password": planted.secret})
    assert not leaked(planted, json.dumps(attributes)), attributes
    assert mask(masked) == masked, "masking masked text changes nothing"


# Values that are secrets only by what surrounds them: short passwords, 32 hex digits (also
# every MD5), nine or eleven bare digits. Everything else is recognised standing alone.
CONTEXTUAL = {"twilio-auth-token", "postgres-url-password", "mongodb-srv-password",
              "redis-url-password", "sqlserver-connection-password", "jdbc-password",
              "generic-password", "sentry-dsn", "nl-bsn", "pl-pesel"}


@pytest.mark.parametrize("planted", [p for p in PLANTED if p.kind not in CONTEXTUAL],
                         ids=[p.kind for p in PLANTED if p.kind not in CONTEXTUAL])
def test_a_secret_standing_alone_is_masked(planted: Planted) -> None:
    attributes = mask_attributes({"value": planted.secret})
    assert not leaked(planted, json.dumps(attributes)), attributes


@pytest.mark.parametrize(
    "text",
    [
        "Meeting moved to 10:30; version 0.12.3 ships on 01/02/2025.",
        "Ticket 0001234567 and room 02-114 are on floor 3.",
        "The key to the cabinet is under the mat; the token budget is 4096.",
        "Invoice INV-2024-000123 for EUR 1.199,00, order 48213-7.",
        "sha256 of the build: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "event 0b7f1a52-3c0e-4c33-9d5e-2a4b8f7e6c1d replayed at 2024-03-15T14:05:09Z",
        "Use the skill 'search' then the tool `sql.query` with limit 50.",
        "The ACME app ID is app-12 and the region is eu-west-1.",
    ],
)
def test_ordinary_agent_text_stays_readable(text: str) -> None:
    assert mask(text) == text


@settings(max_examples=200, deadline=None)
@given(
    planted=st.sampled_from(PLANTED),
    before=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                   max_size=60),
    after=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                  max_size=60),
)
def test_a_planted_sentence_stays_masked_inside_any_text(planted: Planted, before: str,
                                                         after: str) -> None:
    text = f"{before}\n{planted.sentence}\n{after}"
    assert not leaked(planted, mask(text))


def _reference_mod97_ok(compact: str) -> bool:
    """IBAN check written the long way: letters to numbers digit by digit, then mod 97."""
    moved = compact[4:] + compact[:4]
    digits = "".join(str(ord(c) - 55) if c.isalpha() else c for c in moved)
    remainder = 0
    for ch in digits:
        remainder = (remainder * 10 + int(ch)) % 97
    return remainder == 1


@settings(max_examples=300, deadline=None)
@given(st.from_regex(re.compile(r"[1-9]\d{8}\d{2}", re.ASCII), fullmatch=True))
def test_steuer_id_check_agrees_with_a_brute_force_reference(candidate: str) -> None:
    # ISO 7064 MOD 11,10 as the standard states validation: run the chain over all eleven
    # digits, check digit included; the number is valid when the last sum is 1.
    def chain_ok(digits: str) -> bool:
        product, total = 10, 0
        for ch in digits:
            total = (int(ch) + product) % 10 or 10
            product = total * 2 % 11
        return total == 1

    valid = [d for d in "0123456789" if chain_ok(candidate[:10] + d)]
    assert len(valid) == 1
    assert national_ids._de_steuer_id(candidate) == (candidate[10] == valid[0])


@settings(max_examples=300, deadline=None)
@given(st.from_regex(re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", re.ASCII), fullmatch=True))
def test_iban_check_agrees_with_a_reference(compact: str) -> None:
    spaced = " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))
    masked = mask(f"pay {spaced} now")
    if _reference_mod97_ok(compact) and len(compact) <= 34:
        assert "[IBAN]" in masked
    else:
        assert "[IBAN]" not in masked


# --- end to end: a real worker stores them, nothing leaks into any table -------------------


@pytest.mark.integration
def test_planted_secrets_reach_no_clickhouse_table(tmp_path: Path) -> None:
    from test_pipeline import PARTITIONS, RECENT, emit

    from chdb_fixtures import tabsep_reader
    from tripwire.bench.worker_process import WorkerProcess, wait_caught_up, worker_env
    from tripwire.schemas import topics
    from tripwire.schemas.topics import ensure_topics, tripwire_topics
    from tripwire.simulator.fleet import fleet_events
    from tripwire.streams.broker import EmbeddedBroker, free_port

    base = fleet_events(seed=77, agents=6, start_ms=RECENT)
    events = []
    for planted in PLANTED:
        # Once in content, once in attributes (as a value, and under a secret-looking key).
        events.append(next(base) | {"content": planted.sentence})
        carrier = next(base)
        events.append(carrier | {"attributes": {**(carrier.get("attributes") or {}),
                                                "note": planted.sentence,
                                                "api_token": planted.secret}})
    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, tripwire_topics(PARTITIONS)))
        asyncio.run(emit(broker.bootstrap, events))
        env = worker_env(broker.bootstrap, tmp_path / "data", PARTITIONS)
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        try:
            asyncio.run(wait_caught_up(broker.bootstrap, "tripwire", topics.STEPS, PARTITIONS,
                                       worker))
        finally:
            assert worker.stop() == 0, worker.log()[-3000:]

    # Read in this process now that the worker has let go of the dir: one `tripwire sql`
    # process per table (sixteen chDB start-ups) took ~20 of this test's 44 s.
    with tabsep_reader(env["TRIPWIRE_CLICKHOUSE_URL"]) as sql:
        [[stored]] = sql("SELECT count() FROM steps")
        assert int(stored) == len(events)
        tables = [row[0] for row in sql(
            "SELECT name FROM system.tables WHERE database = currentDatabase()"
            " AND engine NOT LIKE '%View%'")]
        assert {"steps", "detections", "mode_changes"} <= set(tables)
        dump = "\n".join("\n".join("\t".join(row) for row in sql(f"SELECT * FROM `{t}`"))
                         for t in tables)
    # TSV escapes newlines; a PEM block is checked line by line (fragments()).
    leaks = [p.kind for p in PLANTED if leaked(p, dump)]
    assert leaks == []
    assert dump.count("[") >= len(PLANTED), "placeholders were stored in their place"


_TOKENS = sorted({tok for p in personal_data() for tok in p.sentence.split()}
                 | {"AB", "C", "WEST", "NWBK", "ABCD", "EFGH", "0", "00", "+", "-", "(415)",
                    "call", "the", "order", "x1Y2z3" * 6, "Key:", "id=7"})


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(_TOKENS) | st.text(alphabet="0123456789ABXZ -./+()", max_size=9)
    | st.from_regex(r"[A-Z0-9]{1,4}", fullmatch=True),  # IBAN groups
    st.sampled_from([" ", " ", "  ", "\n", "\t", "\v", ""])), max_size=24))
def test_digit_windows_give_the_full_text_result(parts: list[tuple[str, str]]) -> None:
    # Brute-force reference: the same rules over the whole text, no windows.
    text = "".join(token + space for token, space in parts)
    assert masking._mask_digits(text, "") == masking._mask_digit_chain(text)


def test_free_text_of_audit_and_breaker_tables_is_stored_masked(ch_migrated) -> None:
    import uuid

    from tripwire.schemas.command_signing import sign_command
    from tripwire.sinks.breaker_sink import BreakerSink
    from tripwire.sinks.control_audit import RecordRef, command_audit_row, insert_rows

    hook = next(p for p in PLANTED if p.kind == "slack-webhook")
    email = next(p for p in PLANTED if p.kind == "email")
    now = int(time.time() * 1000)  # rows older than the test retention would expire at once
    detection = {"detection_id": str(uuid.uuid4()), "ts": now, "agent_id": "a", "run_id": "r",
                 "tool": "t", "detector": "injection", "metric": "hits", "value": 1.0,
                 "threshold": 1.0, "window_ms": None, "severity": "high",
                 "evidence_event_ids": ["e1"], "message": f"signals: {hook.sentence}"}
    control = {"agent_id": "a", "seq": 1, "issued_at": now, "mode": "halted",
               "previous_mode": "autonomous", "scope": "agent", "run_id": None,
               "reason": f"operator: {email.sentence}", "detection_ids": [], "rule": None,
               "expires_at": None, "source": "operator"}
    BreakerSink(ch_migrated).insert([detection], [control])
    kill = sign_command({"command_id": "c-1", "action": "kill", "agent_id": "a", "mode": None,
                         "duration_ms": None, "reason": hook.sentence, "operator": "alice",
                         "issued_at": now}, "ops", "secret")
    insert_rows(ch_migrated, "operator_commands", [command_audit_row(
        RecordRef("agent-commands", 0, 0, now, b"a"), kill, rejection=None, judged_at_ms=now)])
    dump = " ".join(str(row) for table in ("detections", "mode_changes", "operator_commands")
                    for row in ch_migrated.query(f"SELECT * FROM {table}").result_rows)
    assert not leaked(hook, dump) and not leaked(email, dump)
    assert "[SLACK_WEBHOOK_URL]" in dump and "[EMAIL]" in dump


def test_a_lone_surrogate_does_not_stop_masking() -> None:
    hook = next(p for p in PLANTED if p.kind == "slack-webhook")
    masked = mask(f"bad escape \ud800 then {hook.sentence} and password=hunter22")
    assert "\ud800" not in masked and "\ufffd" in masked
    assert not leaked(hook, masked) and "hunter22" not in masked
    masked.encode()  # valid UTF-8 for the driver


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(_TOKENS) | st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
    | st.text(alphabet="0123456789-+ \"'", max_size=9),
    st.sampled_from(['"', "'", " ", "", "-", '", "', "\n", "+"])), max_size=24))
def test_setting_quoted_uuids_aside_changes_nothing(parts: list[tuple[str, str]]) -> None:
    # Brute-force reference: the same rules with every UUID left in place.
    text = "".join(token + sep for token, sep in parts)
    reference = national_ids.mask_national_plain(
        masking._mask_numbers(masking._mask_high_entropy(text, ""), ""))
    assert masking._mask_digit_chain(text) == reference
