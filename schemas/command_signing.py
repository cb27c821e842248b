"""Authenticity of the control plane: HMAC signatures on operator Commands and on Controls.

Pure functions and in-memory state only: no clock reads unless a clock is injected, no I/O.

**Commands** (``schemas/command.avsc``) carry their signature in the record: ``key_id`` names
the operator key, ``nonce`` makes every command unique, ``signature`` is the hex
HMAC-SHA256 of :func:`canonical_command_bytes`. The stream verifies with
:class:`CommandVerifier`, which also rejects expired, future-dated and replayed commands.

**Controls** (``schemas/control.avsc``) are signed by the Tripwire worker in Kafka record
headers (:data:`SIGNATURE_HEADER`, :data:`KEY_ID_HEADER`), so the schema is unchanged. The
worker holds a master secret per key id; each agent gets only its own *derived* key
(:func:`derive_agent_key`), so the key an agent needs to verify its controls cannot sign a
control for any other agent.

Canonical form (so a signer in another language produces the same bytes): a domain prefix,
then the record as JSON with exactly the fields listed below (absent optional fields take
their schema default), object keys sorted, separators ``,`` and ``:``, non-ASCII characters
as UTF-8 (not ``\\u`` escapes), integers in decimal, all encoded as UTF-8. Secrets given as
``str`` are used as their UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "COMMAND_FIELDS",
    "CONTROL_FIELDS",
    "CommandVerifier",
    "ControlVerifier",
    "KEY_ID_HEADER",
    "REJECTIONS",
    "SCOPE_FIELDS",
    "SHARED_AGENT",
    "SIGNATURE_HEADER",
    "canonical_command_bytes",
    "canonical_control_bytes",
    "derive_agent_key",
    "sign_ack",
    "sign_approval_decision",
    "sign_command",
    "sign_control",
    "verify_ack",
    "verify_approval_decision",
]

SIGNATURE_HEADER = "tripwire-signature"
"""Kafka header on agent-controls records: hex HMAC-SHA256 of the canonical control."""
KEY_ID_HEADER = "tripwire-key-id"
"""Kafka header on agent-controls records: id of the master key the signature derives from."""

SHARED_AGENT = "*"
"""``agent_id`` of controls on shared scopes (no agent). Their key is
``derive_agent_key(master, SHARED_AGENT)``, which every guard holds to verify them: see
docs/security.md on what that key can and cannot do."""

_COMMAND_DOMAIN = b"tripwire-command-v1\n"
_CONTROL_DOMAIN = b"tripwire-control-v1\n"
_AGENT_KEY_DOMAIN = b"tripwire-agent-control-key-v1\n"
_ACK_DOMAIN = b"tripwire-control-ack-v1\n"
# Own domain: a decision's signature can never pass as a control's (same per-agent key).
_DECISION_DOMAIN = b"tripwire-approval-decision-v1\n"

COMMAND_FIELDS: Mapping[str, Any] = {
    "command_id": None,
    "action": None,
    "agent_id": None,
    "mode": None,
    "duration_ms": None,
    "reason": None,
    "operator": None,
    "issued_at": None,
    "key_id": None,
    "nonce": None,
}
"""Signed Command fields (every field of command.avsc but ``signature``) and their defaults."""

CONTROL_FIELDS: Mapping[str, Any] = {
    "agent_id": None,
    "mode": None,
    "previous_mode": None,
    "scope": None,
    "run_id": None,
    "reason": None,
    "detection_ids": (),
    "seq": None,
    "issued_at": None,
    "rule": None,
    "expires_at": None,
    "source": "breaker",
}
"""Signed Control fields (every field of control.avsc) and their defaults."""

SCOPE_FIELDS: tuple[str, ...] = (
    "agent_version", "environment", "workflow", "tool", "action_class", "condition", "command_id",
)
"""Fields added to Command and Control after their first version (all default null). They are
covered by a signature only when set, so a record that leaves them null has the same canonical
bytes as before they existed: guards and workers from before scopes keep verifying agent and
run records, and their signatures keep verifying here."""
DECISION_FIELDS: Mapping[str, Any] = {
    "request_id": None,
    "agent_id": None,
    "run_id": None,
    "tool": None,
    "action_class": None,
    "kind": None,
    "approved": None,
    "approver": None,
    "reason_code": None,
    "reason_text": None,
    "requested_at": None,
    "decided_at": None,
}
"""Signed ApprovalDecision fields (every field of approval_decision.avsc)."""

REJECTIONS: Mapping[str, str] = {
    "malformed": "the command lacks fields a signed command must have",
    "unsigned": "no key_id, nonce or signature",
    "unknown_key": "key_id is not a configured operator key",
    "bad_signature": "the signature does not match the command",
    "expired": "issued longer ago than the allowed age",
    "from_future": "issued_at is ahead of the verifier's clock by more than the allowed skew",
    "replayed": "this nonce was already accepted",
    "wrong_agent": "the control names another agent than the one verifying it",
}
"""Reasons :meth:`CommandVerifier.verify` and :meth:`ControlVerifier.verify` return, with
what they mean. Short and stable, so audit tables can group by them."""

Secret = str | bytes


def _secret_bytes(secret: Secret) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise ValueError("an HMAC secret must not be empty")
    return raw


def _canonical_json(record: Mapping[str, Any], fields: Mapping[str, Any]) -> bytes:
    body = {}
    for name, default in fields.items():
        value = record.get(name, default)
        body[name] = list(value) if isinstance(value, tuple | list) else value
    for name in SCOPE_FIELDS:
        value = record.get(name)
        if value is not None:
            body[name] = value
    text = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def _mac(secret: Secret, message: bytes) -> str:
    return hmac.new(_secret_bytes(secret), message, hashlib.sha256).hexdigest()


def _same(expected_hex: str, given: object) -> bool:
    # Compared as bytes: compare_digest refuses non-ASCII str, and a signature field is
    # attacker-controlled input that must be rejected, never raise.
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(expected_hex.encode(), given.lower().encode("utf-8"))


def _signature_headers(key_id: str, agent_key: Secret, message: bytes) -> list[tuple[str, bytes]]:
    """The Kafka headers of every header-signed record (controls, acks, approval decisions):
    the key id and the hex HMAC of ``message`` under ``agent_key``."""
    signature = _mac(agent_key, message)
    return [(KEY_ID_HEADER, key_id.encode("utf-8")), (SIGNATURE_HEADER, signature.encode())]


def _sign_for_agent(
    record: Mapping[str, Any], key_id: str, master_secret: Secret,
    canonical: Callable[[Mapping[str, Any], str], bytes],
) -> list[tuple[str, bytes]]:
    """Headers for a record signed for one agent (controls, approval decisions): the MAC of
    ``canonical(record, key_id)`` under the key derived for the record's ``agent_id``."""
    if not key_id:
        raise ValueError("key_id must be a non-empty string")
    agent_key = derive_agent_key(master_secret, record["agent_id"])
    return _signature_headers(key_id, agent_key, canonical(record, key_id))


def _read_signature_headers(
    headers: Sequence[tuple[str, bytes]] | None,
) -> tuple[str, str] | str:
    """``(key_id, signature)`` from a header-signed record, or the reason from
    :data:`REJECTIONS` why they cannot be read ("unsigned" or "malformed")."""
    found = dict(headers or ())
    key_id_raw, signature_raw = found.get(KEY_ID_HEADER), found.get(SIGNATURE_HEADER)
    if not key_id_raw or not signature_raw:
        return "unsigned"
    try:
        return key_id_raw.decode("utf-8"), signature_raw.decode("ascii")
    except UnicodeDecodeError:
        return "malformed"


def _verify_for_agent(
    record: Mapping[str, Any],
    headers: Sequence[tuple[str, bytes]] | None,
    agent_id: str,
    keys: Mapping[str, Secret],
    canonical: Callable[[Mapping[str, Any], str], bytes],
) -> str | None:
    """The check of a record signed for one agent (controls, approval decisions): None if its
    headers carry a known key id and the MAC of ``canonical(record, key_id)`` under that key,
    and the record names ``agent_id``; else a reason from :data:`REJECTIONS`."""
    read = _read_signature_headers(headers)
    if isinstance(read, str):
        return read
    key_id, signature = read
    if record.get("agent_id") != agent_id:
        return "wrong_agent"
    secret = keys.get(key_id)
    if secret is None:
        return "unknown_key"
    try:
        expected = _mac(secret, canonical(record, key_id))
    except (TypeError, ValueError):
        return "malformed"  # a value JSON cannot represent canonically, or an empty key
    if not _same(expected, signature):
        return "bad_signature"
    return None


# --- commands -----------------------------------------------------------------------------


def canonical_command_bytes(command: Mapping[str, Any]) -> bytes:
    """The bytes a Command's signature covers: every field but ``signature``."""
    return _COMMAND_DOMAIN + _canonical_json(command, COMMAND_FIELDS)


def sign_command(
    command: Mapping[str, Any], key_id: str, secret: Secret, *, nonce: str | None = None
) -> dict[str, Any]:
    """A copy of ``command`` with ``key_id``, a fresh ``nonce`` and its ``signature`` set.

    Fields the canonical form does not cover are refused rather than silently left unsigned.
    """
    unknown = set(command) - set(COMMAND_FIELDS) - set(SCOPE_FIELDS) - {"signature"}
    if unknown:
        raise ValueError(f"fields not in the Command contract: {sorted(unknown)}")
    if not key_id:
        raise ValueError("key_id must be a non-empty string")
    signed = {name: command.get(name, default) for name, default in COMMAND_FIELDS.items()}
    signed.update({name: command[name] for name in SCOPE_FIELDS if command.get(name) is not None})
    signed["key_id"] = key_id
    signed["nonce"] = nonce or secrets.token_hex(16)
    signed["signature"] = _mac(secret, canonical_command_bytes(signed))
    return signed


class CommandVerifier:
    """Checks operator Commands: signature, age and single use.

    ``keys`` maps key id to operator secret. A command is accepted when it is signed by a
    known key, was issued at most ``max_age_s`` ago and at most ``max_skew_s`` in the future,
    and its nonce has not been accepted before. Nonces are remembered until they expire
    (an expired command is rejected anyway), so memory is bounded by the command rate times
    ``max_age_s``; only holders of an operator key can add to it.

    Not thread-safe: one verifier per stream task.
    """

    def __init__(
        self,
        keys: Mapping[str, Secret],
        *,
        max_age_s: float = 300.0,
        max_skew_s: float = 30.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if max_age_s <= 0 or max_skew_s < 0:
            raise ValueError("max_age_s must be > 0 and max_skew_s >= 0")
        self._keys = {key_id: _secret_bytes(secret) for key_id, secret in keys.items()}
        self.max_age_ms = int(max_age_s * 1000)
        self.max_skew_ms = int(max_skew_s * 1000)
        self._clock = clock
        # nonce -> where the command that used it was read (None: unknown), so the same record
        # read again (at-least-once re-delivery) is not mistaken for a replay.
        self._nonces: dict[str, Any] = {}
        self._expiry: list[tuple[int, str]] = []  # (issued_at, nonce), min-heap

    def verify(self, command: Mapping[str, Any], now_ms: int | None = None,
               source: Any = None) -> str | None:
        """None if the command may be applied (its nonce is then used up), else a reason from
        :data:`REJECTIONS`. ``source`` identifies the record it was read from (e.g. topic,
        partition, offset): the same record verified again is a re-delivery, not a replay."""
        now = self._now(now_ms)
        self._forget_before(now - self.max_age_ms)
        key_id, nonce, signature = (command.get(f) for f in ("key_id", "nonce", "signature"))
        if not key_id or not nonce or not signature:
            return "unsigned"
        issued_at = command.get("issued_at")
        if not isinstance(issued_at, int) or isinstance(issued_at, bool):
            return "malformed"
        if not all(isinstance(v, str) for v in (key_id, nonce, signature)):
            return "malformed"
        secret = self._keys.get(key_id)
        if secret is None:
            return "unknown_key"
        try:
            expected = _mac(secret, canonical_command_bytes(command))
        except (TypeError, ValueError):
            return "malformed"  # a value JSON cannot represent canonically
        if not _same(expected, signature):
            return "bad_signature"
        if issued_at < now - self.max_age_ms:
            return "expired"
        if issued_at > now + self.max_skew_ms:
            return "from_future"
        if nonce in self._nonces:
            if source is None or self._nonces[nonce] != source:
                return "replayed"
            return None
        self._remember(nonce, issued_at, source)
        return None

    def remember(self, commands: Iterable[Mapping[str, Any]]) -> None:
        """Mark already-applied commands' nonces as used, e.g. re-read after a restart, so a
        replay within ``max_age_s`` of the original is still caught. Each item has ``nonce``,
        ``issued_at`` and optionally ``source``, as :meth:`verify` takes it."""
        for command in commands:
            nonce, issued_at = command.get("nonce"), command.get("issued_at")
            if nonce and isinstance(issued_at, int) and nonce not in self._nonces:
                self._remember(nonce, issued_at, command.get("source"))

    @property
    def remembered(self) -> int:
        """Nonces currently held."""
        return len(self._nonces)

    def _remember(self, nonce: str, issued_at: int, source: Any) -> None:
        self._nonces[nonce] = source
        heapq.heappush(self._expiry, (issued_at, nonce))

    def _forget_before(self, horizon_ms: int) -> None:
        while self._expiry and self._expiry[0][0] < horizon_ms:
            _, nonce = heapq.heappop(self._expiry)
            self._nonces.pop(nonce, None)

    def _now(self, now_ms: int | None) -> int:
        if now_ms is not None:
            return now_ms
        if self._clock is None:
            raise ValueError("pass now_ms or construct the verifier with a clock")
        return self._clock()


# --- controls -----------------------------------------------------------------------------


def derive_agent_key(master_secret: Secret, agent_id: str) -> str:
    """The key that signs and verifies one agent's controls, as hex.

    The worker derives it from its master secret for every control it signs; the agent is
    provisioned with only its own, so it can verify but cannot sign for another agent.
    """
    if not agent_id:
        raise ValueError("agent_id must be a non-empty string")
    return _mac(master_secret, _AGENT_KEY_DOMAIN + agent_id.encode("utf-8"))


def canonical_control_bytes(control: Mapping[str, Any], key_id: str) -> bytes:
    """The bytes a Control's signature covers: the key id and every Control field."""
    return _CONTROL_DOMAIN + key_id.encode("utf-8") + b"\n" + _canonical_json(
        control, CONTROL_FIELDS
    )


def sign_control(
    control: Mapping[str, Any], key_id: str, master_secret: Secret
) -> list[tuple[str, bytes]]:
    """Kafka headers that authenticate ``control``; the worker adds them to the record."""
    return _sign_for_agent(control, key_id, master_secret, canonical_control_bytes)


class ControlVerifier:
    """Checks the header signature of one agent's Controls.

    ``keys`` maps key id to that agent's derived key (:func:`derive_agent_key`); several ids
    allow key rotation. Replay needs no nonce here: a control only applies when its ``seq``
    is above the last one applied, which the consumer checks.
    """

    def __init__(self, agent_id: str, keys: Mapping[str, Secret]) -> None:
        if not keys:
            raise ValueError("a ControlVerifier needs at least one key")
        self.agent_id = agent_id
        self._keys = {key_id: _secret_bytes(secret) for key_id, secret in keys.items()}

    def verify(
        self, control: Mapping[str, Any], headers: Sequence[tuple[str, bytes]] | None
    ) -> str | None:
        """None if ``control`` is authentic and for this agent, else a reason."""
        return _verify_for_agent(control, headers, self.agent_id, self._keys,
                                 canonical_control_bytes)


# --- acknowledgements ---------------------------------------------------------------------

ACK_FIELDS: Mapping[str, Any] = {
    "kind": None,
    "guard_instance": None,
    "agent_id": None,
    "control_key": None,
    "seq": None,
    "mode": None,
    "command_id": None,
    "issued_at": None,
    "applied_at": None,
}
"""Signed ControlAck fields (every field of control_ack.avsc)."""


def _canonical_ack_bytes(ack: Mapping[str, Any], key_id: str) -> bytes:
    return _ACK_DOMAIN + key_id.encode("utf-8") + b"\n" + _canonical_json(ack, ACK_FIELDS)


def sign_ack(ack: Mapping[str, Any], key_id: str, agent_key: Secret) -> list[tuple[str, bytes]]:
    """Kafka headers authenticating a guard's acknowledgement, signed with the agent's derived
    key (the guard holds no other), so an ack names its agent truthfully."""
    return _signature_headers(key_id, agent_key, _canonical_ack_bytes(ack, key_id))


def verify_ack(
    ack: Mapping[str, Any], headers: Sequence[tuple[str, bytes]] | None,
    master_keys: Mapping[str, Secret],
) -> str | None:
    """None if ``ack`` is signed by its agent's key derived from one of ``master_keys``."""
    read = _read_signature_headers(headers)
    if isinstance(read, str):
        return read
    key_id, signature = read
    master = master_keys.get(key_id)
    if master is None:
        return "unknown_key"
    message = _canonical_ack_bytes(ack, key_id)
    expected = _mac(derive_agent_key(master, ack["agent_id"]), message)
    return None if _same(expected, signature) else "bad_signature"


# --- approval decisions -------------------------------------------------------------------
# Signed like controls: Kafka headers, the agent's derived key, its own domain. No nonce: a
# guard accepts a decision only for a request id it is waiting on, and request ids are random
# and used once, so a replayed decision answers nothing.


def canonical_decision_bytes(decision: Mapping[str, Any], key_id: str) -> bytes:
    return _DECISION_DOMAIN + key_id.encode("utf-8") + b"\n" + _canonical_json(
        decision, DECISION_FIELDS
    )


def sign_approval_decision(
    decision: Mapping[str, Any], key_id: str, master_secret: Secret
) -> list[tuple[str, bytes]]:
    """Kafka headers that authenticate ``decision`` to the asking agent's guard."""
    return _sign_for_agent(decision, key_id, master_secret, canonical_decision_bytes)


def verify_approval_decision(
    decision: Mapping[str, Any],
    headers: Sequence[tuple[str, bytes]] | None,
    agent_id: str,
    keys: Mapping[str, Secret],
) -> str | None:
    """None if ``decision`` is authentic and for ``agent_id``; else a reason from
    :data:`REJECTIONS`. ``keys``: key id -> the agent's derived key, as for controls."""
    return _verify_for_agent(decision, headers, agent_id, keys, canonical_decision_bytes)
