"""What ``tripwire run`` leaves in its data dir so the CLI can talk to it with no set-up.

* ``dev-keys.json`` (mode 600): a development operator key and control master key, made on
  the first start and kept, so commands signed yesterday's way and agents' derived control
  keys stay valid across restarts. Never used unless nothing else is configured: the
  worker uses it only under ``tripwire run`` or ``--insecure-dev-keys``, the CLI only when
  ``TRIPWIRE_OPERATOR_KEY_ID`` / ``TRIPWIRE_OPERATOR_KEY`` are unset.
* ``stack.json`` (mode 600): where the running stack's broker and ClickHouse are (the
  embedded one also over HTTP, with this run's password), and its pid; written when the
  stack is ready, removed when it stops (a stale one, whose pid is gone, is ignored).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEV_KEYS_FILE = "dev-keys.json"
STACK_FILE = "stack.json"
DEV_OPERATOR_KEY_ID = "dev-operator"
DEV_CONTROL_KEY_ID = "dev-control"


@dataclass(frozen=True)
class DevKeys:
    operator_key_id: str
    operator_key: str
    control_key_id: str
    control_key: str
    path: Path


def provision_dev_keys(data_dir: Path) -> tuple[DevKeys, bool]:
    """The data dir's development keys, made now if missing; (keys, made now)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DEV_KEYS_FILE
    fields = {"operator_key_id": DEV_OPERATOR_KEY_ID, "operator_key": secrets.token_hex(32),
              "control_key_id": DEV_CONTROL_KEY_ID, "control_key": secrets.token_hex(32)}
    try:
        # O_EXCL: two stacks starting on one dir at once agree on the first one's keys.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        keys = load_dev_keys(data_dir)
        if keys is None:
            raise ValueError(f"{path} is not a Tripwire dev-keys file: remove it") from None
        return keys, False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(fields, f, indent=2)
    return DevKeys(**fields, path=path.resolve()), True


def load_dev_keys(data_dir: Path) -> DevKeys | None:
    path = data_dir / DEV_KEYS_FILE
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
        return DevKeys(operator_key_id=fields["operator_key_id"],
                       operator_key=fields["operator_key"],
                       control_key_id=fields["control_key_id"],
                       control_key=fields["control_key"], path=path.resolve())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_stack(data_dir: Path, **where: Any) -> Path:
    path = data_dir / STACK_FILE
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    # 600: it may carry the password of the embedded ClickHouse's HTTP interface.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w",
                   encoding="utf-8") as f:
        json.dump({**where, "pid": os.getpid()}, f, indent=2)
    tmp.replace(path)
    return path


def read_stack(data_dir: Path) -> dict[str, Any] | None:
    """The running stack's descriptor, or None if there is none or its process is gone."""
    try:
        stack = json.loads((data_dir / STACK_FILE).read_text(encoding="utf-8"))
        os.kill(int(stack["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stack if isinstance(stack, dict) else None


def remove_stack(data_dir: Path) -> None:
    path = data_dir / STACK_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass
