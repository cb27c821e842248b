"""compose.yaml cannot run here (no Docker engine); check what can be checked by reading it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tripwire.streams.cli import _parser
from tripwire.streams.settings import TripwireSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
TRIPWIRE_SERVICES = [n for n, s in SERVICES.items() if s.get("build")]


def test_production_services_are_present() -> None:
    assert {"kafka", "clickhouse", "tripwire-init", "tripwire-worker"} <= set(SERVICES)
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert SERVICES["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


@pytest.mark.parametrize("service", TRIPWIRE_SERVICES)
def test_env_is_exactly_settings_fields_and_valid(service: str, monkeypatch) -> None:
    env = SERVICES[service]["environment"]
    fields = {f"TRIPWIRE_{n.upper()}" for n in TripwireSettings.model_fields}
    assert set(env) <= fields, f"{service} sets variables no setting reads: {set(env) - fields}"
    for k, v in env.items():
        monkeypatch.setenv(k, _interpolated(str(v)))
    s = TripwireSettings()
    kafka_host, kafka_port = s.bootstrap().split(":")
    assert kafka_host in SERVICES
    assert f"PLAINTEXT://:{kafka_port}" in SERVICES["kafka"]["environment"]["KAFKA_LISTENERS"]
    ch = urlparse(s.clickhouse_dsn())
    assert ch.hostname in SERVICES
    ch_env = SERVICES[ch.hostname]["environment"]
    assert (ch.username, ch.password, ch.path.strip("/")) == (
        ch_env["CLICKHOUSE_USER"], ch_env["CLICKHOUSE_PASSWORD"], ch_env["CLICKHOUSE_DB"])
    assert s.idempotence() is True


# What an operator's .env would give the ${VAR:?message} references (required: compose stops
# with the message when one is unset).
SAMPLE_SECRETS = {"TRIPWIRE_OPERATOR_KEYS": '{"ops": "s"}', "TRIPWIRE_CONTROL_KEY_ID": "ctl",
                  "TRIPWIRE_CONTROL_KEYS": '{"ctl": "m"}'}


def _interpolated(value: str) -> str:
    return re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: SAMPLE_SECRETS[m.group(1)], value)


def test_worker_keys_are_required_not_defaulted() -> None:
    env = SERVICES["tripwire-worker"]["environment"]
    for name in SAMPLE_SECRETS:
        assert re.fullmatch(r"\$\{" + name + r":\?[^{}]+\}", env[name]), env[name]


@pytest.mark.parametrize("service", TRIPWIRE_SERVICES)
def test_commands_are_real_subcommands(service: str) -> None:
    cmd = SERVICES[service]["command"]
    _parser().parse_args(cmd)  # exits on an unknown subcommand


def test_image_contains_every_package() -> None:
    """Every folder either wheel is built from is copied into the image's build stage."""
    dirs: set[str] = set()
    for pyproject in (ROOT / "pyproject.toml", ROOT / "sdk" / "pyproject.toml"):
        mapping = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
        dirs |= {(pyproject.parent / d).resolve().relative_to(ROOT).as_posix()
                 for d in mapping.values()}
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.M))
    assert dirs == copied
    # And the files the server's setup.py builds with.
    files = re.search(r"^COPY (.+) \./$", dockerfile, re.M)
    assert files is not None
    assert {"pyproject.toml", "setup.py", "compile_detectors.py"} <= set(files.group(1).split())
