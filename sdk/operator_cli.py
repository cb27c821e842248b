"""``tripwire status | kill | pin | restrict | release``: operator commands (:mod:`sdk.operator`).

Configuration comes from the settings model (``TRIPWIRE_OPERATOR_KEY_ID``,
``TRIPWIRE_OPERATOR_KEY``, ``TRIPWIRE_OPERATOR``, ``TRIPWIRE_CONTROL_KEYS``); flags override
all but the secret, which never goes on a command line (it would show in ``ps``): pass
``--key-file`` to read it from a file instead. With no key configured, the development keys
and broker address of a ``tripwire run`` in the data dir (``--data-dir``, default
``TRIPWIRE_DATA_DIR``) are used (see :mod:`tripwire.sdk.local_stack`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from tripwire.schemas.modes import Mode
from tripwire.schemas.topics import COMMANDS, CONTROLS, DETECTIONS
from tripwire.sdk.ack_report import format_ack_report, wait_for_acks
from tripwire.sdk.local_stack import load_dev_keys, read_stack
from tripwire.sdk.operator import (
    OperatorKey,
    format_status,
    issue,
    new_command,
    parse_duration,
    read_status,
)
from tripwire.sdk.scopes import Scope

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--bootstrap", help="host:port (default: configured bootstrap, else "
                      "the `tripwire run` in the data dir)")
    conn.add_argument("--data-dir", type=Path,
                      help="data dir of a `tripwire run` whose broker and development keys to "
                      "use when none are configured (default: TRIPWIRE_DATA_DIR)")

    signed = argparse.ArgumentParser(add_help=False, parents=[conn])
    signed.add_argument("--reason", required=True,
                        help="why (required): shown to the agent's owner and audited")
    signed.add_argument("--operator", help="who issues it (default: TRIPWIRE_OPERATOR or $USER)")
    signed.add_argument("--key-id", help="operator key id (default: TRIPWIRE_OPERATOR_KEY_ID)")
    signed.add_argument("--key-file", type=Path,
                        help="file holding the operator secret (default: TRIPWIRE_OPERATOR_KEY)")
    signed.add_argument("--topic", default=COMMANDS, help=f"commands topic (default {COMMANDS})")
    signed.add_argument("--no-wait", action="store_true",
                        help="do not wait for guards to acknowledge the control")
    signed.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                        help="longest wait for acknowledgements (default 10)")
    signed.add_argument("--recent", type=float, default=300.0, metavar="SECONDS",
                        help="guards heard from within this many seconds are expected to "
                        "acknowledge (default 300)")

    scoped = argparse.ArgumentParser(add_help=False)
    scoped.add_argument("--all", action="store_true", help="the whole fleet")
    scoped.add_argument("--environment", help="scope: agents in this environment")
    scoped.add_argument("--workflow", help="scope: agents of this workflow")
    scoped.add_argument("--version", dest="agent_version", help="scope: this agent version")
    scoped.add_argument("--tool", help="scope: this tool, or a pattern such as 'warehouse.*'")
    scoped.add_argument("--action-class", dest="action_class",
                        choices=["read", "write", "external", "money", "destructive"],
                        help="scope: calls of this action class")

    status = sub.add_parser("status", parents=[conn],
                            help="current mode, since when, why, last detections")
    status.add_argument("agent", nargs="?", help="one agent (default: the whole fleet)")
    status.add_argument("--last", type=int, default=None,
                        help="detections per agent (default 5 for one agent, 1 for the fleet)")
    status.add_argument("--json", action="store_true", help="JSON lines instead of text")
    status.add_argument("--controls-topic", default=CONTROLS)
    status.add_argument("--detections-topic", default=DETECTIONS)
    status.set_defaults(handler=status_command)

    kill = sub.add_parser("kill", parents=[signed, scoped],
                          help="halt an agent, a scope (--workflow, --tool, ...) or --all")
    kill.add_argument("agent", nargs="?")
    kill.set_defaults(handler=kill_command)

    pin = sub.add_parser("pin", parents=[signed, scoped],
                         help="fix an agent's mode (or a scope's ceiling) for a while")
    pin.add_argument("target", nargs="+", metavar="[AGENT] MODE")
    pin.add_argument("--for", dest="duration", required=True,
                     help="how long: 90s, 15m, 2h, 1d, or indefinite (until released)")
    pin.set_defaults(handler=pin_command)

    restrict = sub.add_parser("restrict", parents=[signed, scoped],
                              help="cap a scope at a mode until released (default read_only)")
    restrict.add_argument("agent", nargs="?")
    restrict.add_argument("--mode", default=str(Mode.READ_ONLY),
                          choices=[str(m) for m in Mode if m != Mode.AUTONOMOUS])
    restrict.set_defaults(handler=restrict_command)

    release = sub.add_parser("release", parents=[signed, scoped],
                             help="end a pin, kill or restriction; the breaker's recovery "
                             "takes over")
    release.add_argument("agent", nargs="?")
    release.set_defaults(handler=release_command)


# --- handlers -----------------------------------------------------------------------------


def status_command(args: argparse.Namespace) -> int:
    settings = _settings()
    last = args.last if args.last is not None else (5 if args.agent else 1)
    control_keys = _json_setting(settings, "control_keys")
    dev = load_dev_keys(_data_dir(args, settings))
    if not control_keys and dev is not None:
        control_keys = {dev.control_key_id: dev.control_key}
    statuses = asyncio.run(read_status(
        _bootstrap(args, settings), args.agent, controls_topic=args.controls_topic,
        detections_topic=args.detections_topic, last_detections=last,
        control_keys=control_keys or None))
    if args.json:
        for s in statuses:
            print(json.dumps(s.to_json(), sort_keys=True))
    else:
        print(format_status(statuses))
    return 0


def _scope(args: argparse.Namespace, agent: str | None) -> Scope | None:
    """The scope the flags name; None for --all. ValueError if they contradict."""
    selectors = {name: getattr(args, name) for name in
                 ("agent_version", "environment", "workflow", "tool", "action_class")}
    selectors = {k: v for k, v in selectors.items() if v}
    if args.all:
        if agent or selectors:
            raise ValueError("name an AGENT or --all, not both (--all is the whole fleet)")
        return None
    if not agent and not selectors:
        raise ValueError("name an AGENT or --all, or a scope (--environment, --workflow, "
                         "--version, --tool, --action-class)")
    return Scope(agent_id=agent or None, **selectors)


def kill_command(args: argparse.Namespace) -> int:
    try:
        scope = _scope(args, args.agent)
    except ValueError as exc:
        return _fail(str(exc))
    if scope is None:
        return _send(args, "kill_all")
    return _send(args, "kill", scope=scope)


def pin_command(args: argparse.Namespace) -> int:
    if len(args.target) > 2:
        return _fail("pin takes [AGENT] MODE")
    agent, mode = (None, args.target[0]) if len(args.target) == 1 else args.target
    if mode not in {m.value for m in Mode}:
        return _fail(f"pin: invalid choice: {mode!r} (choose from "
                     f"{', '.join(m.value for m in Mode)})")
    try:
        duration_ms = parse_duration(args.duration)
        scope = _scope(args, agent)
    except ValueError as exc:
        return _fail(str(exc))
    if scope is None:
        return _fail("pin takes an AGENT or a scope; for the fleet use kill --all")
    return _send(args, "pin", scope=scope, mode=mode, duration_ms=duration_ms)


def restrict_command(args: argparse.Namespace) -> int:
    try:
        scope = _scope(args, args.agent)
    except ValueError as exc:
        return _fail(str(exc))
    if scope is None:
        return _fail("restrict takes an AGENT or a scope; for the fleet use kill --all")
    return _send(args, "restrict", scope=scope, mode=args.mode)


def release_command(args: argparse.Namespace) -> int:
    try:
        scope = _scope(args, args.agent)
    except ValueError as exc:
        return _fail(str(exc))
    if scope is None:
        return _send(args, "release_all")
    return _send(args, "release", scope=scope)


def _send(args: argparse.Namespace, action: str, **fields: Any) -> int:
    settings = _settings()
    try:
        key, key_source = _operator_key(args, settings)
        command = new_command(action, reason=args.reason, operator=_operator(args, settings),
                              **fields)
    except ValueError as exc:
        return _fail(str(exc))
    bootstrap = _bootstrap(args, settings)
    # Kafka's and our own operational errors reach the CLI's main, which prints them as one
    # line naming what to set (streams/operational_errors.py).
    sent = asyncio.run(issue(bootstrap, command, key, topic=args.topic,
                             idempotence=_idempotence(settings)))
    scope = fields.get("scope")
    target = (scope.key() if scope is not None else f"the fleet ({len(sent)} partitions)")
    print(f"tripwire: {action} {target}: command {command['command_id']} signed with key "
          f"{key.key_id}{key_source}, sent to {args.topic} on {bootstrap}", flush=True)
    if args.no_wait:
        return 0
    try:
        report = asyncio.run(wait_for_acks(
            bootstrap, command["command_id"], command["issued_at"], scope=scope,
            timeout_s=args.wait, recent_s=args.recent,
            control_keys=_json_setting(settings, "control_keys") or None))
    except Exception as exc:  # noqa: BLE001 - the command is sent; only the count failed
        print(f"tripwire: sent, but could not read acknowledgements: {exc!r}", file=sys.stderr)
        return 0
    print(f"tripwire: {format_ack_report(report)}")
    return 0


# --- configuration ------------------------------------------------------------------------


def _settings() -> Any:
    from tripwire.streams.cli import load_settings

    return load_settings()


def _setting(settings: Any, name: str) -> Any:
    # Until the settings model has the operator fields, their TRIPWIRE_* variables are read
    # here directly, under the names the settings fields will have.
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(f"TRIPWIRE_{name.upper()}")
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return value


def _json_setting(settings: Any, name: str) -> dict[str, str]:
    value = _setting(settings, name)
    if not value:
        return {}
    if isinstance(value, str):
        return json.loads(value)
    return {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v
            for k, v in dict(value).items()}


def _data_dir(args: argparse.Namespace, settings: Any) -> Path:
    return args.data_dir or settings.data_dir


def _bootstrap(args: argparse.Namespace, settings: Any) -> str:
    if args.bootstrap or settings.kafka_bootstrap:
        return args.bootstrap or settings.kafka_bootstrap
    stack = read_stack(_data_dir(args, settings))
    return str(stack["bootstrap"]) if stack and stack.get("bootstrap") else settings.bootstrap()


def _idempotence(settings: Any) -> bool:
    return bool(settings.idempotence())


def _operator(args: argparse.Namespace, settings: Any) -> str:
    return args.operator or _setting(settings, "operator") or getpass.getuser()


def _operator_key(args: argparse.Namespace, settings: Any) -> tuple[OperatorKey, str]:
    """The key to sign with, and where it came from if not from the configuration."""
    key_id = args.key_id or _setting(settings, "operator_key_id")
    if args.key_file is not None:
        secret = args.key_file.read_text(encoding="utf-8").strip()
    else:
        secret = _setting(settings, "operator_key")
    if not key_id and not secret:
        dev = load_dev_keys(_data_dir(args, settings))
        if dev is not None:
            return OperatorKey(dev.operator_key_id, dev.operator_key), f" (from {dev.path})"
    if not key_id or not secret:
        raise ValueError("commands must be signed: set TRIPWIRE_OPERATOR_KEY_ID and "
                         "TRIPWIRE_OPERATOR_KEY (or --key-id / --key-file), or point --data-dir "
                         "at the data dir of a `tripwire run` (it keeps development keys "
                         f"in dev-keys.json; none in {_data_dir(args, settings).resolve()})")
    return OperatorKey(key_id, secret), ""


def _fail(message: str) -> int:
    print(f"tripwire: {message}", file=sys.stderr)
    return 2
