"""Signed operator commands and signed controls: what is accepted and why everything else is not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tripwire.schemas.codec import COMMAND_SCHEMA, CONTROL_SCHEMA, command_codec, control_codec
from tripwire.schemas.command_signing import (
    COMMAND_FIELDS,
    CONTROL_FIELDS,
    KEY_ID_HEADER,
    REJECTIONS,
    SCOPE_FIELDS,
    SIGNATURE_HEADER,
    CommandVerifier,
    ControlVerifier,
    canonical_command_bytes,
    derive_agent_key,
    sign_command,
    sign_control,
)

NOW = 1_800_000_000_000
KEYS = {"ops-2026": "operator-secret", "ops-old": "older-secret"}


def command(**overrides: Any) -> dict[str, Any]:
    base = {
        "command_id": "cmd-1", "action": "pin", "agent_id": "agent-1", "mode": "read_only",
        "duration_ms": 3_600_000, "reason": "investigating refunds", "operator": "alice",
        "issued_at": NOW,
    }
    return base | overrides


def signed(**overrides: Any) -> dict[str, Any]:
    return sign_command(command(**overrides), "ops-2026", KEYS["ops-2026"])


def verifier(**options: Any) -> CommandVerifier:
    return CommandVerifier(KEYS, **options)


def test_the_canonical_field_lists_are_the_contracts_fields():
    command_fields = [f["name"] for f in json.loads(COMMAND_SCHEMA.read_text())["fields"]]
    control_fields = [f["name"] for f in json.loads(CONTROL_SCHEMA.read_text())["fields"]]
    # Fields added with scopes are signed only when set (SCOPE_FIELDS), so records without
    # them keep the canonical bytes they had before.
    assert sorted({*COMMAND_FIELDS, *SCOPE_FIELDS} & set(command_fields)) == sorted(
        f for f in command_fields if f != "signature")
    assert sorted({*CONTROL_FIELDS, *SCOPE_FIELDS}) == sorted(control_fields)


def test_a_signed_command_is_accepted_once():
    v = verifier()
    cmd = signed()
    assert v.verify(cmd, NOW + 1000) is None
    assert v.verify(cmd, NOW + 2000) == "replayed"


def test_signing_survives_the_wire():
    codec = command_codec()
    cmd = signed(reason="naïve — ünïcode reason", duration_ms=None, mode=None, action="kill")
    assert verifier().verify(codec.decode(codec.encode(cmd)), NOW) is None


def test_canonical_bytes_are_specified_json():
    cmd = command(reason="é")
    body = canonical_command_bytes(cmd).split(b"\n", 1)[1].decode()
    assert body == json.dumps({**dict(COMMAND_FIELDS), **cmd}, sort_keys=True,
                              separators=(",", ":"), ensure_ascii=False)
    assert "é" in body


@pytest.mark.parametrize(
    ("cmd", "now", "reason"),
    [
        (command(), NOW, "unsigned"),
        (signed() | {"signature": None}, NOW, "unsigned"),
        (signed() | {"nonce": None}, NOW, "unsigned"),
        (sign_command(command(), "stranger", "whatever"), NOW, "unknown_key"),
        (sign_command(command(), "ops-2026", "wrong-secret"), NOW, "bad_signature"),
        (signed() | {"signature": "00" * 32}, NOW, "bad_signature"),
        (signed(), NOW + 301_000, "expired"),
        (signed(), NOW - 31_000, "from_future"),
        (signed(issued_at=None), NOW, "malformed"),
    ],
)
def test_rejections(cmd, now, reason):
    assert reason in REJECTIONS
    assert verifier().verify(cmd, now) == reason


def test_a_rotated_out_key_still_verifies_while_configured():
    cmd = sign_command(command(), "ops-old", KEYS["ops-old"])
    assert verifier().verify(cmd, NOW) is None


def test_rejected_commands_do_not_use_up_their_nonce():
    v = verifier()
    good = signed()
    assert v.verify(good | {"reason": "tampered"}, NOW) == "bad_signature"
    assert v.verify(good, NOW) is None


def test_nonce_memory_is_bounded_by_the_max_age():
    v = verifier(max_age_s=60)
    for i in range(100):
        at = NOW + i * 1000
        assert v.verify(signed(command_id=f"c{i}", issued_at=at), at) is None
    assert v.remembered <= 61
    # A nonce old enough to be forgotten is rejected for its age instead.
    first = signed(command_id="c-first")
    v2 = verifier(max_age_s=60)
    assert v2.verify(first, NOW) is None
    assert v2.verify(signed(issued_at=NOW + 61_000), NOW + 61_000) is None
    assert v2.remembered == 1
    assert v2.verify(first, NOW + 61_000) == "expired"


def test_remember_preloads_nonces_after_a_restart():
    cmd = signed()
    v = verifier()
    v.remember([cmd])
    assert v.verify(cmd, NOW) == "replayed"


def test_the_same_record_read_again_is_a_redelivery_not_a_replay():
    cmd = signed()
    v = verifier()
    assert v.verify(cmd, NOW, ("agent-commands", 2, 40)) is None
    assert v.verify(cmd, NOW + 10, ("agent-commands", 2, 40)) is None  # at-least-once re-read
    assert v.verify(cmd, NOW + 20, ("agent-commands", 2, 41)) == "replayed"  # a copy
    assert v.verify(cmd, NOW + 30) == "replayed"  # no source: never trusted as a re-read
    restarted = verifier()
    restarted.remember([{"nonce": cmd["nonce"], "issued_at": cmd["issued_at"],
                         "source": ("agent-commands", 2, 40)}])
    assert restarted.verify(cmd, NOW + 40, ("agent-commands", 2, 40)) is None
    assert restarted.verify(cmd, NOW + 50, ("agent-commands", 0, 3)) == "replayed"


def test_verifier_clock_is_injectable():
    assert CommandVerifier(KEYS, clock=lambda: NOW).verify(signed()) is None
    with pytest.raises(ValueError, match="clock"):
        verifier().verify(signed())


def test_sign_refuses_fields_it_would_not_cover():
    with pytest.raises(ValueError, match="not in the Command contract"):
        sign_command(command(priority="high"), "ops-2026", "s")


# -- property: any single-field tamper is rejected -----------------------------------------

_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=30))


@given(field=st.sampled_from([*COMMAND_FIELDS, "signature"]), value=_json_scalars)
def test_any_single_field_tamper_is_rejected(field: str, value: Any):
    original = signed()
    if value == original[field] and type(value) is type(original[field]):
        return  # not a tamper
    tampered = original | {field: value}
    # A fresh verifier each time: the point is the signature, not the nonce memory.
    assert verifier().verify(tampered, NOW) is not None


@given(reason=st.text(max_size=200), operator=st.text(min_size=1, max_size=40),
       duration=st.one_of(st.none(), st.integers(0, 2**62)))
def test_any_signed_command_verifies_after_the_wire(reason: str, operator: str, duration):
    codec = command_codec()
    cmd = signed(reason=reason, operator=operator, duration_ms=duration)
    assert verifier().verify(codec.decode(codec.encode(cmd)), NOW) is None


# -- controls ------------------------------------------------------------------------------

MASTER = "worker-master"


def control(**overrides: Any) -> dict[str, Any]:
    base = {
        "agent_id": "agent-1", "mode": "read_only", "previous_mode": "autonomous",
        "scope": "agent", "run_id": None, "reason": "denial storm", "detection_ids": ["d-1"],
        "seq": 4, "issued_at": NOW, "rule": "denials_s2", "expires_at": None,
        "source": "breaker",
    }
    return base | overrides


def control_verifier(agent_id: str = "agent-1") -> ControlVerifier:
    return ControlVerifier(agent_id, {"w1": derive_agent_key(MASTER, agent_id)})


def test_a_signed_control_verifies_after_the_wire():
    codec = control_codec()
    ctl = control()
    headers = sign_control(ctl, "w1", MASTER)
    assert dict(headers).keys() == {KEY_ID_HEADER, SIGNATURE_HEADER}
    assert control_verifier().verify(codec.decode(codec.encode(ctl)), headers) is None


def test_missing_defaults_sign_like_the_decoded_record():
    codec = control_codec()
    sparse = {k: v for k, v in control().items() if k not in ("source", "detection_ids")}
    headers = sign_control(sparse, "w1", MASTER)
    assert control_verifier().verify(codec.decode(codec.encode(sparse)), headers) is None


def test_agent_keys_are_per_agent():
    assert derive_agent_key(MASTER, "agent-1") != derive_agent_key(MASTER, "agent-2")
    # agent-2's key (all agent-2 holds) cannot produce a control agent-1 accepts.
    forged = control(mode="autonomous", seq=5)
    key2 = derive_agent_key(MASTER, "agent-2")
    from tripwire.schemas.command_signing import _mac, canonical_control_bytes  # the raw primitive

    headers = [(KEY_ID_HEADER, b"w1"),
               (SIGNATURE_HEADER, _mac(key2, canonical_control_bytes(forged, "w1")).encode())]
    assert control_verifier().verify(forged, headers) == "bad_signature"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (None, "unsigned"),
        ([(KEY_ID_HEADER, b"w1")], "unsigned"),
        ([(KEY_ID_HEADER, b"w9"), (SIGNATURE_HEADER, b"00")], "unknown_key"),
        ([(KEY_ID_HEADER, b"\xff"), (SIGNATURE_HEADER, b"00")], "malformed"),
    ],
)
def test_control_rejections(headers, reason):
    assert control_verifier().verify(control(), headers) == reason


def test_a_control_for_another_agent_is_refused():
    ctl = control(agent_id="agent-2")
    assert control_verifier().verify(ctl, sign_control(ctl, "w1", MASTER)) == "wrong_agent"


@given(field=st.sampled_from(list(CONTROL_FIELDS)), value=_json_scalars)
def test_any_single_control_field_tamper_is_rejected(field: str, value: Any):
    original = control()
    if value == original[field] and type(value) is type(original[field]):
        return
    headers = sign_control(original, "w1", MASTER)
    assert control_verifier().verify(original | {field: value}, headers) is not None
