"""Tripwire's detectors and breaker: pure, synchronous Python over plain event dicts.

Where things are:

* ``agent_monitor.AgentMonitor``: one agent's detectors plus breaker; the stream's entry point.
* ``denial_rate``, ``loops``, ``spend``, ``prompt_injection_hits``: the detectors.
* ``breaker.Breaker``: modes, cool-down, probation, run stops, operator commands.
* ``policy``: every threshold, window, budget and cool-down, with the reason for each default.
* ``severity.SeverityBands``: where a value is compared with its thresholds, and the fire /
  re-arm (hysteresis) rule.
* ``windows``, ``evidence``, ``runs``: event-time windows, evidence ids, per-run state.

No Kafka, Faust, ClickHouse or I/O here: everything is testable with plain dicts.
"""
