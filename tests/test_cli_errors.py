"""Every command, given an unreachable or wrong service, a missing topic, a bad argument or a bad
setting, prints one line naming what it tried and what to set, and exits 2: no traceback.

Run as a user runs them: the installed ``tripwire`` entry point's module in a subprocess, from
an empty directory, with no TRIPWIRE_* variables but the case's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration

DEAD_KAFKA = "{dead_kafka}"
LIVE_KAFKA = "{live_kafka}"
LIVE_PORT = "{live_port}"
DEAD_CH = "{dead_clickhouse}"
EMPTY_CHDB = "{empty_chdb}"
BAD_POLICY = "{bad_policy}"
GOOD_POLICY = "{good_policy}"
KEYS = {"TRIPWIRE_OPERATOR_KEY_ID": "ops", "TRIPWIRE_OPERATOR_KEY": "s3cret"}
WORKER_KEYS = {"TRIPWIRE_OPERATOR_KEYS": '{"ops": "s3cret"}', "TRIPWIRE_CONTROL_KEY_ID": "c1",
               "TRIPWIRE_CONTROL_KEYS": '{"c1": "m4ster"}'}
UNREACHABLE_KAFKA = ("cannot reach Kafka at " + DEAD_KAFKA, "TRIPWIRE_KAFKA_BOOTSTRAP")
UNREACHABLE_CH = ("ClickHouse at http://default:***@127.0.0.1:", "TRIPWIRE_CLICKHOUSE_URL")
WRONG_CH = ("ClickHouse at chdb://", "TRIPWIRE_CLICKHOUSE_URL", "tripwire init")

# (case id, argv, environment, what the one line must say)
CASES: list[tuple[str, list[str], dict[str, str], tuple[str, ...]]] = [
    # unreachable broker
    ("status/kafka", ["status"], {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA}, UNREACHABLE_KAFKA),
    ("status/kafka-flag", ["status", "agent-1", "--bootstrap", DEAD_KAFKA], {},
     UNREACHABLE_KAFKA),
    ("kill/kafka", ["kill", "agent-1", "--reason", "x"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA, **KEYS}, UNREACHABLE_KAFKA),
    ("kill-all/kafka", ["kill", "--all", "--reason", "x"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA, **KEYS}, UNREACHABLE_KAFKA),
    ("pin/kafka", ["pin", "agent-1", "read_only", "--for", "1h", "--reason", "x"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA, **KEYS}, UNREACHABLE_KAFKA),
    ("release/kafka", ["release", "agent-1", "--reason", "x"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA, **KEYS}, UNREACHABLE_KAFKA),
    ("init/kafka", ["init"], {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA}, UNREACHABLE_KAFKA),
    ("worker/kafka", ["worker"], {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA, **WORKER_KEYS},
     UNREACHABLE_KAFKA),
    ("simulate/kafka", ["simulate", "--duration", "1"], {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA},
     UNREACHABLE_KAFKA),
    # missing topic
    ("status/topic", ["status", "--controls-topic", "no-such-topic"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": LIVE_KAFKA}, ("topic no-such-topic does not exist",
                                               "tripwire init")),
    ("kill/topic", ["kill", "agent-1", "--reason", "x", "--topic", "no-such-commands"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": LIVE_KAFKA, "TRIPWIRE_KAFKA_IDEMPOTENCE": "false", **KEYS},
     ("topic no-such-commands does not exist",
                                                       "tripwire init")),
    ("kill/idempotent-producer", ["kill", "agent-1", "--reason", "x"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": LIVE_KAFKA, **KEYS}, ("TRIPWIRE_KAFKA_IDEMPOTENCE=false",)),
    # unreachable or wrong ClickHouse
    ("sql/clickhouse", ["sql", "SELECT 1"], {"TRIPWIRE_CLICKHOUSE_URL": DEAD_CH}, UNREACHABLE_CH),
    ("sql/wrong-clickhouse", ["sql", "SELECT count() FROM steps"],
     {"TRIPWIRE_CLICKHOUSE_URL": EMPTY_CHDB}, (*WRONG_CH, "no Tripwire tables")),
    ("evidence/clickhouse", ["evidence", "run-1", "--clickhouse-url", DEAD_CH], {},
     UNREACHABLE_CH),
    ("evidence/wrong-clickhouse", ["evidence", "run-1"], {"TRIPWIRE_CLICKHOUSE_URL": EMPTY_CHDB},
     (*WRONG_CH, "no Tripwire tables")),
    ("backtest/clickhouse", ["backtest", "--policy", GOOD_POLICY, "--clickhouse-url", DEAD_CH],
     {}, UNREACHABLE_CH),
    ("backtest/wrong-clickhouse", ["backtest", "--policy", GOOD_POLICY],
     {"TRIPWIRE_CLICKHOUSE_URL": EMPTY_CHDB}, (*WRONG_CH, "no Tripwire tables")),
    ("gate/clickhouse", ["gate", "--agent", "a", "--candidate", "2", "--baseline", "1",
                         "--clickhouse-url", DEAD_CH], {}, UNREACHABLE_CH),
    ("gate/wrong-clickhouse", ["gate", "--agent", "a", "--candidate", "2", "--baseline", "1"],
     {"TRIPWIRE_CLICKHOUSE_URL": EMPTY_CHDB}, (*WRONG_CH, "no Tripwire tables")),
    ("dashboard/clickhouse", ["dashboard", "--duration", "1", "--port", "0"],
     {"TRIPWIRE_CLICKHOUSE_URL": DEAD_CH}, UNREACHABLE_CH),
    ("init/clickhouse", ["init"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": LIVE_KAFKA, "TRIPWIRE_CLICKHOUSE_URL": DEAD_CH}, UNREACHABLE_CH),
    ("worker/clickhouse", ["worker"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": LIVE_KAFKA, "TRIPWIRE_CLICKHOUSE_URL": DEAD_CH, **WORKER_KEYS},
     UNREACHABLE_CH),
    ("sql/relative-chdb", ["sql", "SELECT 1"], {"TRIPWIRE_CLICKHOUSE_URL": "chdb://rel/dir"},
     ("chdb:///absolute/dir",)),
    # no keys, unusable data dir, busy broker port
    ("worker/no-keys", ["worker"], {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA},
     ("refusing to start without keys", "TRIPWIRE_OPERATOR_KEYS", "--insecure-dev-keys")),
    ("kill/no-keys", ["kill", "agent-1", "--reason", "x"], {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA},
     ("must be signed", "TRIPWIRE_OPERATOR_KEY_ID", "--data-dir")),
    ("worker/data-dir", ["worker", "--insecure-dev-keys"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA, "TRIPWIRE_DATA_DIR": "/proc/tripwire-data"},
     ("cannot use data dir /proc/tripwire-data", "TRIPWIRE_DATA_DIR")),
    ("run/busy-port", ["run", "--duration", "1", "--broker-port", LIVE_PORT], {},
     ("already in use", "--broker-port")),
    # bad arguments
    ("kill/no-reason", ["kill", "agent-1"], {}, ("--reason", "tripwire kill --help")),
    ("kill/agent-and-all", ["kill", "agent-1", "--all", "--reason", "x"], KEYS,
     ("AGENT or --all",)),
    ("kill/key-file", ["kill", "agent-1", "--reason", "x", "--key-id", "k", "--key-file",
                       "/no/such/key"], {}, ("/no/such/key: No such file or directory",)),
    ("pin/mode", ["pin", "agent-1", "sideways", "--for", "1h", "--reason", "x"], {},
     ("invalid choice: 'sideways'",)),
    ("pin/duration", ["pin", "agent-1", "read_only", "--for", "soon", "--reason", "x"], KEYS,
     ("duration 'soon'",)),
    ("status/last", ["status", "--last", "many"], {}, ("--last", "invalid int")),
    ("release/no-agent", ["release", "--reason", "x"], {}, ("AGENT or --all",)),
    ("evidence/neither", ["evidence"], {}, ("RUN_ID or --agent",)),
    ("evidence/since", ["evidence", "--agent", "a", "--since", "yesterday-ish"],
     {"TRIPWIRE_CLICKHOUSE_URL": EMPTY_CHDB}, ("yesterday-ish",)),
    ("sql/no-query", ["sql"], {}, ("query", "tripwire sql --help")),
    ("simulate/rate", ["simulate", "--rate", "fast"], {}, ("--rate",)),
    ("simulate/scenario", ["simulate", "--scenario", "meteor", "--duration", "1"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": LIVE_KAFKA}, ("meteor",)),
    ("scan/flag", ["scan", "--fast"], {}, ("--fast",)),
    ("run/duration", ["run", "--duration", "soon"], {}, ("--duration",)),
    ("worker/flag", ["worker", "--fast"], {}, ("--fast",)),
    ("init/extra", ["init", "now"], {}, ("now",)),
    ("dashboard/port", ["dashboard", "--port", "eighty"], {}, ("--port",)),
    ("bench/events", ["bench", "--events", "many"], {}, ("--events",)),
    ("unknown-command", ["explode"], {}, ("explode",)),
    # bad settings
    ("status/setting", ["status"], {"TRIPWIRE_PARTITIONS": "0"}, ("TRIPWIRE_PARTITIONS",)),
    ("worker/policy", ["worker", "--insecure-dev-keys"],
     {"TRIPWIRE_KAFKA_BOOTSTRAP": DEAD_KAFKA, "TRIPWIRE_POLICY_FILE": BAD_POLICY},
     ("invalid policy file", "loops.max_steps")),
    ("worker/setting", ["worker"], {"TRIPWIRE_LOG_FORMAT": "xml"}, ("TRIPWIRE_LOG_FORMAT",)),
    ("backtest/policy", ["backtest", "--policy", BAD_POLICY],
     {"TRIPWIRE_CLICKHOUSE_URL": EMPTY_CHDB}, ("invalid policy file", "loops.max_steps")),
    ("backtest/current-policy", ["backtest", "--policy", GOOD_POLICY, "--current",
                                 "/no/such/policy.yaml"], {"TRIPWIRE_CLICKHOUSE_URL": EMPTY_CHDB},
     ("invalid policy file /no/such/policy.yaml",)),
    ("gate/policy", ["gate", "--agent", "a", "--candidate", "2", "--baseline", "1", "--policy",
                     BAD_POLICY], {"TRIPWIRE_CLICKHOUSE_URL": EMPTY_CHDB},
     ("invalid policy file", "loops.max_steps")),
]


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory):
    """A broker of this module's own: the session's shared one may already hold an
    auto-created agent-steps (4 partitions) from other tests, which `init` and `worker` would
    rightly report before reaching the ClickHouse these cases are about."""
    log = tmp_path_factory.mktemp("cli-errors-broker") / "tansu.log"
    with EmbeddedBroker(port=free_port(), log_path=log) as b:
        yield b


@pytest.fixture(scope="module")
def places(own_broker: EmbeddedBroker,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    broker = own_broker
    bad_policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    bad_policy.write_text("defaults:\n  loops:\n    max_steps: many\n")
    good_policy = bad_policy.with_name("good.yaml")
    good_policy.write_text("defaults: {}\n")
    return {
        DEAD_KAFKA: f"127.0.0.1:{free_port()}",
        LIVE_KAFKA: broker.bootstrap,
        LIVE_PORT: str(broker.port),
        DEAD_CH: f"http://default:pw@127.0.0.1:{free_port()}/tripwire",
        EMPTY_CHDB: f"chdb://{tmp_path_factory.mktemp('empty-chdb')}",
        BAD_POLICY: str(bad_policy),
        GOOD_POLICY: str(good_policy),
    }


@pytest.mark.parametrize(("argv", "env", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_one_line_and_exit_2(places, tmp_path: Path, argv, env, expected) -> None:
    def fill(text: str) -> str:
        for placeholder, value in places.items():
            text = text.replace(placeholder, value)
        return text

    run_env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    # Bounded: an unreachable broker is reported after this, not after the default 10 s. A dead
    # loopback port refuses at once, so half a second is several attempts (2 s made init,
    # worker and simulate's cases 3 s each).
    run_env["TRIPWIRE_KAFKA_CONNECT_TIMEOUT_S"] = "0.5"
    run_env.update({k: fill(v) for k, v in env.items()})
    empty = tmp_path / "cwd"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "tripwire.streams.cli", *map(fill, argv)],
                          cwd=empty, env=run_env, capture_output=True, text=True, timeout=120)
    err = done.stderr.strip()
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert len(err.splitlines()) == 1, f"expected one line on stderr:\n{done.stderr}"
    assert err.startswith("tripwire"), err
    for part in expected:
        assert fill(part) in err, f"{fill(part)!r} not in {err!r}"
