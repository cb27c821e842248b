"""`python -m tripwire.bench.backtest` at toy scale: every figure is printed, so the benchmark
cannot silently break between the runs whose figures the README quotes."""

from __future__ import annotations

import re

import pytest

from tripwire.bench.backtest import main

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("change", ["breaker", "detectors"])
def test_backtest_bench_prints_every_figure(change: str, capsys) -> None:
    assert main(["--steps", "20000", "--agents", "10", "--days", "0.2", "--change", change]) == 0
    out = capsys.readouterr().out
    assert re.search(r"ceiling \(read \+ decode only\): 20,000 events", out), out
    assert re.search(r"backtest \(\w+ change\): 20,000 events in .* events/s wall, "
                     r"[\d,]+ per CPU s", out), out
    assert re.search(r"peak memory [\d,]+ MB", out) and "target >= 200,000" in out, out
    assert "replay alone" in out, out
