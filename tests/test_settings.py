from __future__ import annotations

import subprocess
import sys

import pytest

from tripwire.streams.cli import load_settings
from tripwire.streams.settings import TripwireSettings


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("TRIPWIRE_PARTITIONS", "0", "TRIPWIRE_PARTITIONS"),
        ("TRIPWIRE_PARTITIONS", "eight", "TRIPWIRE_PARTITIONS"),
        ("TRIPWIRE_KAFKA_BOOTSTRAP", "localhost", "TRIPWIRE_KAFKA_BOOTSTRAP"),
        ("TRIPWIRE_CLICKHOUSE_URL", "mysql://x", "TRIPWIRE_CLICKHOUSE_URL"),
        ("TRIPWIRE_RETENTION_DAYS", "-1", "TRIPWIRE_RETENTION_DAYS"),
        ("TRIPWIRE_POLICY_FILE", "/nonexistent/policy.yaml", "policy_file"),
    ],
)
def test_invalid_config_fails_fast_naming_the_field(monkeypatch, capsys, var, value, named):
    monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit) as exc:
        load_settings()
    assert exc.value.code == 2
    assert named in capsys.readouterr().err


def test_unrelated_tripwire_variable_does_not_break_startup(monkeypatch):
    # Env vars are matched by name; an unrelated TRIPWIRE_ variable must not break start-up.
    monkeypatch.setenv("TRIPWIRE_SOMETHING_ELSE", "1")
    assert TripwireSettings().partitions == 8


def test_defaults_embedded(monkeypatch, tmp_path):
    monkeypatch.setenv("TRIPWIRE_DATA_DIR", str(tmp_path))
    s = TripwireSettings()
    assert s.embedded_broker and s.bootstrap() == "127.0.0.1:9092"
    assert s.idempotence() is False
    assert s.clickhouse_dsn() == f"chdb://{tmp_path.resolve() / 'clickhouse'}"


def test_external_kafka_turns_idempotence_on(monkeypatch):
    monkeypatch.setenv("TRIPWIRE_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    assert TripwireSettings().idempotence() is True


def test_help_prints_every_setting():
    out = subprocess.run([sys.executable, "-m", "tripwire.streams.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in TripwireSettings.model_fields:
        assert f"TRIPWIRE_{name.upper()}" in out


def test_worker_refuses_to_start_without_external_kafka(monkeypatch, capsys):
    from tripwire.streams.cli import main

    monkeypatch.delenv("TRIPWIRE_KAFKA_BOOTSTRAP", raising=False)
    assert main(["worker"]) == 2
    assert "TRIPWIRE_KAFKA_BOOTSTRAP" in capsys.readouterr().err


def test_readme_documents_every_setting():
    from pathlib import Path

    from tripwire.streams.settings import settings_markdown

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert settings_markdown() in readme, "regenerate the README table from settings_markdown()"
