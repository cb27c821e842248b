"""Tripwire's one configuration model: env vars ``TRIPWIRE_*``, validated at start.

Every component reads its configuration from :class:`TripwireSettings`; nothing else
looks at the environment, so ``tripwire --help`` can print the whole surface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebUser(BaseModel):
    """One web UI user: a role and, for token login, a secret token (SSO users need none)."""

    model_config = {"extra": "forbid"}
    role: Literal["viewer", "approver", "operator"]
    token: SecretStr | None = None


class TripwireSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIPWIRE_", extra="forbid", validate_default=True)

    kafka_bootstrap: str | None = Field(
        None,
        description="host:port[,host:port] of an external Kafka. Unset: `tripwire run` starts "
        "the embedded broker on 127.0.0.1.",
    )
    kafka_idempotence: bool | None = Field(
        None,
        description="Idempotent Kafka producers. Unset: on against external Kafka, off against "
        "the embedded broker (it does not implement InitProducerId).",
    )
    broker_port: int = Field(9092, ge=1, le=65535, description="Port of the embedded broker.")
    clickhouse_url: str | None = Field(
        None,
        description="chdb:///path (embedded) or http(s)://user:pass@host:port/db. Unset: "
        "embedded chDB in <data_dir>/clickhouse.",
    )
    data_dir: Path = Field(Path("data"), description="Where embedded state lives (chDB, worker).")
    partitions: int = Field(8, ge=1, le=1024, description="Partitions of every Tripwire topic.")
    replication_factor: int = Field(1, ge=1, le=16, description="Replication of created topics.")
    retention_days: int = Field(90, ge=1, le=3650, description="TTL of rows in ClickHouse.")
    app_id: str = Field("tripwire", min_length=1, description="Faust app id / consumer group.")
    # Each insert costs ~100 ms however small (the rollup views' planning and new parts,
    # measured with chDB): 5,000-row inserts spent more on that than on the rows.
    sink_batch_rows: int = Field(
        20_000, ge=1, le=1_000_000,
        description="Rows that seal a ClickHouse batch; a writer that falls behind inserts the "
        "batches queued meanwhile together, up to 50,000 rows.",
    )
    sink_flush_seconds: float = Field(
        1.0, gt=0, le=60,
        description="Longest wait before a partial batch is inserted (one of 1,000 rows or "
        "more goes as soon as the stream has added nothing for 0.2 s).",
    )
    stream_batch_records: int = Field(
        500, ge=1, le=100_000,
        description="Most agent-steps records the detectors take at once (latency vs. overhead).",
    )
    stream_batch_seconds: float = Field(
        0.02, gt=0, le=5,
        description="Longest wait to fill a detector batch; bounds detection latency.",
    )
    live_agents: int = Field(
        5_000, ge=1,
        description="Agents whose monitors stay deserialised in memory (LRU); the rest live "
        "only in the changelogged table.",
    )
    fetch_max_wait_ms: int = Field(
        20, ge=1, le=5000,
        description="Longest a worker fetch may wait for data. Real Kafka answers as soon as "
        "data arrives; the embedded broker always waits this long, so keep it short.",
    )
    agent_idle_expiry_s: float = Field(
        86_400.0, gt=0,
        description="State of an agent silent this long is dropped, but only if it is "
        "autonomous with nothing pending (a downgraded agent is never forgotten). Longer "
        "than every detector window (the longest, daily spend, is 24 h).",
    )
    changelog_end_markers: bool | None = Field(
        None,
        description="Close every state write with a one-record changelog batch. Unset: on for "
        "the embedded broker, whose ListOffsets answers the last batch's base offset + 1 "
        "rather than the high watermark (Faust would restore short).",
    )
    kafka_session_timeout_s: float = Field(
        10.0, gt=0, description="Consumer-group session timeout."
    )
    kafka_rebalance_timeout_s: float = Field(
        5.0, gt=0, description="Consumer-group rebalance timeout (how long a join waits)."
    )
    policy_file: Path | None = Field(
        None, description="YAML/TOML breaker policy (built-in defaults if unset)."
    )
    dashboard_host: str = Field(
        "127.0.0.1", description="Where `tripwire run` / `tripwire dashboard` serve the pages."
    )
    dashboard_port: int = Field(
        8080, ge=0, le=65535, description="Dashboard port (0: any free port)."
    )
    web_users: dict[str, WebUser] = Field(
        default_factory=dict,
        description='JSON {"alice": {"role": "approver", "token": "..."}}: who may use the web '
        "UI (roles viewer < approver < operator). Unset and no proxy header: `tripwire run` "
        "makes a one-run operator token and prints it.",
    )
    web_proxy_user_header: str | None = Field(
        None,
        description="Header a trusted reverse proxy (SSO) sets to the signed-in user's name, "
        "e.g. X-Forwarded-User. Unset: only tokens log in.",
    )
    web_trusted_proxies: tuple[str, ...] = Field(
        ("127.0.0.1", "::1"),
        description="Peer addresses whose web_proxy_user_header is believed (the proxy's).",
    )
    web_proxy_default_role: Literal["none", "viewer", "approver", "operator"] = Field(
        "viewer",
        description="Role of a proxy-identified user not listed in web_users: the proxy "
        "already authenticated them, and viewing is the least privilege.",
    )
    web_session_hours: float = Field(
        12.0, gt=0, le=720,
        description="Lifetime of a browser login: a working day, so a shift logs in once.",
    )
    operator: str | None = Field(
        None, description="Who issues operator commands from this shell (default: $USER)."
    )
    operator_key_id: str | None = Field(
        None, description="Key id operator commands are signed with (tripwire kill/pin/release)."
    )
    operator_key: SecretStr | None = Field(
        None, description="HMAC secret of operator_key_id; commands without it are not sent."
    )
    operator_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Worker side: JSON {"key id": "secret"} of operator keys whose signed '
        "commands are applied; every other command is rejected and audited.",
    )
    command_max_age_s: float = Field(
        300.0, gt=0, le=86_400,
        description="Commands older than this are rejected (replay protection window).",
    )
    control_key_id: str | None = Field(
        None, description="Key id of the master secret that signs published controls."
    )
    control_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='JSON {"key id": "master secret"}: controls are signed per agent with a '
        "key derived from it (agents get only their own derived key).",
    )
    alert_webhooks: str | None = Field(
        None,
        description='JSON {"owner:team": url, "workflow:name": url, "default": url}: where '
        "owners are told about downgrades, run stops, kills and recoveries.",
    )
    alert_dedup_s: float = Field(
        300.0, ge=0, description="Same alert for the same agent at most once per this window."
    )
    alert_max_retries: int = Field(5, ge=0, le=50, description="Webhook delivery retries.")
    otlp_topic: str | None = Field(
        None,
        description="Topic the OpenTelemetry Collector's Kafka exporter writes spans to (e.g. "
        "otlp_spans): its GenAI spans become steps. Unset: no OTLP source.",
    )
    otlp_encoding: Literal["otlp_proto", "otlp_json"] = Field(
        "otlp_proto", description="Encoding of otlp_topic, as the exporter's `encoding` "
        "(otlp_proto is its default).",
    )
    otlp_agent_keys: str = Field(
        "gen_ai.agent.id,service.name",
        min_length=1,
        description="Span/resource attributes naming a span's agent, first complete group "
        "wins ('+' joins a group's values with '/', e.g. service.name+service.instance.id). "
        "gen_ai.agent.id first: one process may run several agents. Not service.instance.id "
        "by default: the OTel SDKs make it a random UUID per process, so a restarted agent "
        "would shed its downgrade.",
    )
    otlp_run_key: Literal["trace", "conversation"] = Field(
        "trace", description="What a span's run is: its trace (one agent invocation), or its "
        "gen_ai.conversation.id when it has one (for agents whose conversation is one task).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Worker log level."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Worker console lines: text for people, json (one object a line: ts, "
        "level, logger, message) for log shippers. Faust's own log goes to "
        "<data_dir>/worker.log either way.",
    )
    insecure_dev_keys: bool = Field(
        False,
        description="Let `tripwire worker` run without TRIPWIRE_OPERATOR_KEYS and "
        "TRIPWIRE_CONTROL_KEY_ID by using development keys kept in <data_dir>/dev-keys.json "
        "(what `tripwire run` always does). Never in production: anyone who can read that file "
        "can issue commands.",
    )
    stop_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="Longest a stopping worker waits for an orderly stop (final inserts and "
        "commit) before exiting anyway with status 3. A healthy worker stops in ~2 s; one "
        "whose broker is gone would otherwise wait minutes. Nothing is lost: uncommitted "
        "records are delivered again and deduplicated.",
    )
    kafka_connect_timeout_s: float = Field(
        10.0, gt=0, le=600,
        description="How long start-up and commands retry an unreachable broker before "
        "failing with one line. 10 s covers a broker starting beside the worker.",
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_port(cls, v: str | None) -> str | None:
        if v is None:
            return v
        for hp in v.split(","):
            host, sep, port = hp.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {hp!r}")
        return v

    @field_validator("otlp_agent_keys")
    @classmethod
    def _agent_key_groups(cls, v: str) -> str:
        for group in v.split(","):
            if not group.strip() or any(not k.strip() for k in group.split("+")):
                raise ValueError(f"expected attr[+attr][,attr[+attr]...], got {v!r}")
        return v

    @field_validator("otlp_topic")
    @classmethod
    def _otlp_topic_name(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or v.startswith("agent-")):
            raise ValueError(f"expected the Collector's topic (e.g. otlp_spans), got {v!r}")
        return v

    @field_validator("clickhouse_url")
    @classmethod
    def _clickhouse_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("chdb://", "http://", "https://")):
            raise ValueError(f"must start with chdb://, http:// or https://, got {v!r}")
        return v

    @model_validator(mode="after")
    def _policy_exists(self) -> TripwireSettings:
        if self.policy_file is not None and not self.policy_file.is_file():
            raise ValueError(f"policy_file: no such file {self.policy_file}")
        if self.control_key_id is not None and self.control_key_id not in self.control_keys:
            raise ValueError(f"control_key_id: {self.control_key_id!r} is not in control_keys")
        if self.alert_webhooks is not None:
            import json

            try:
                routes = json.loads(self.alert_webhooks)
            except ValueError as exc:
                raise ValueError(f"alert_webhooks: not JSON: {exc}") from None
            if not isinstance(routes, dict) or not all(
                isinstance(v, str) and v.startswith(("http://", "https://"))
                for v in routes.values()
            ):
                raise ValueError('alert_webhooks: expected {"owner:x"|"workflow:y"|"default": '
                                 '"http(s)://..."}')
        return self

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap is None

    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"

    def idempotence(self) -> bool:
        if self.kafka_idempotence is not None:
            return self.kafka_idempotence
        return not self.embedded_broker

    def end_markers(self) -> bool:
        if self.changelog_end_markers is not None:
            return self.changelog_end_markers
        return self.embedded_broker

    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


def describe_settings() -> str:
    """The configuration reference printed by ``tripwire --help``."""
    lines = ["environment (TRIPWIRE_*):"]
    for name, f in TripwireSettings.model_fields.items():
        default = "{}" if f.default_factory is not None else f.default
        lines.append(f"  TRIPWIRE_{name.upper():<28} default={default!s:<12} {f.description or ''}")
    return "\n".join(lines)


def settings_markdown() -> str:
    """The README's configuration table (tests keep the README in step with the model)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, f in TripwireSettings.model_fields.items():
        default = "unset" if f.default is None else f"`{f.default}`"
        if f.default_factory is not None:
            default = "`{}`"
        rows.append(f"| `TRIPWIRE_{name.upper()}` | {default} | {f.description or ''} |")
    return "\n".join(rows)
