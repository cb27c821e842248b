"""A stand-in for the Faust table ``AgentStates`` writes: it keeps the changelog records it is
sent, so tests can replay them the way recovery does."""

from __future__ import annotations

from typing import Any


class ChangelogTable:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.changelog: list[tuple[int, str, Any]] = []

    def send_changelog(self, partition: int, key: str, value: Any, **_: Any) -> None:
        self.changelog.append((partition, key, value))
