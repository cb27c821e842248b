"""The dashboards in a real headless browser (Debian's chromium, driven by playwright).

Fails, never skips, when chromium is missing: scripts/setup_browser.sh installs it.
Screenshots of both dashboards land in the test's tmp dir; with
TRIPWIRE_WRITE_SCREENSHOTS=1 they are written to docs/ instead (the committed ones).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tripwire.dashboards.filters import now_ms
from tripwire.dashboards.sample_fleet import SampleFleet, fill
from tripwire.dashboards.screenshots import CHROMIUM, chromium_page, wait_for_dashboard
from tripwire.dashboards.server import DashboardServer
from tripwire.sinks.clickhouse import Client

pytestmark = pytest.mark.integration
DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_debian_chromium_is_installed() -> None:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: run scripts/setup_browser.sh"


@pytest.fixture
def site(ch_migrated: Client) -> Iterator[tuple[str, SampleFleet]]:
    sample = fill(ch_migrated, end_ms=now_ms() - 60_000, hours=3.0)
    with DashboardServer(ch_migrated, port=0) as server:
        yield server.url, sample


@pytest.fixture
def page(site) -> Iterator[object]:
    with chromium_page() as p:
        errors: list[str] = []
        p.on("pageerror", lambda err: errors.append(str(err)))
        p.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
        yield p
        assert not errors, errors


def stat(page, name: str) -> str:
    return page.locator(f'[data-stat="{name}"] .v').inner_text()


def modes_table(page) -> dict[str, str]:
    rows = page.locator('[data-panel="safety_current_modes"] tbody tr')
    out = {}
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td")
        out[cells.nth(0).inner_text()] = cells.nth(2).inner_text()
    return out


def test_dashboards_render_the_fleet_story_and_filters_apply(site, page, tmp_path: Path) -> None:
    url, sample = site
    page.goto(f"{url}/#/safety?range=6h&refresh=0")
    wait_for_dashboard(page, "safety")
    cards = page.locator(".panel")
    assert cards.count() >= 10
    assert page.locator('.panel[data-state="error"]').count() == 0
    # Charts are drawn in the browser, by plotly, from the JSON endpoints.
    for name in ("safety_blocked_actions", "safety_blocked_runs", "safety_blocks_by_rule",
                 "safety_mode_transitions", "safety_mode_time"):
        card = page.locator(f'[data-panel="{name}"]')
        assert int(card.get_attribute("data-rows") or 0) > 0, name
        assert card.locator(".main-svg").count() > 0, name
    # Which agents were downgraded, why, and what it cost: at a glance.
    assert int(stat(page, "agents_downgraded")) == len(sample.final_modes())
    modes = modes_table(page)
    assert modes["agent-denial-storm-1"] == "read_only"
    assert modes["agent-overspend-1"] == "suggest_only"
    assert modes["agent-000"] == "autonomous"
    reason = page.locator('[data-panel="safety_current_modes"] tbody tr').first.inner_text()
    assert "denial_rate" in reason
    shots = DOCS if os.environ.get("TRIPWIRE_WRITE_SCREENSHOTS") == "1" else tmp_path
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "safety-dashboard.png"), full_page=True)

    # The agent filter narrows every panel to that agent.
    page.select_option('#filters select[name="agent"]', "agent-denial-storm-1")
    page.wait_for_function("() => location.hash.includes('agent=agent-denial-storm-1')")
    wait_for_dashboard(page, "safety")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-panel=\"safety_current_modes\"] tbody tr')"
        ".length === 1")
    assert list(modes_table(page)) == ["agent-denial-storm-1"]
    assert stat(page, "agents_active") == "1"

    # Business dashboard: the overspender's cost per task stands out.
    page.goto(f"{url}/#/business?range=6h&refresh=0")
    wait_for_dashboard(page, "business")
    assert page.locator('.panel[data-state="error"]').count() == 0
    for name in ("business_task_success", "business_loop_lengths",
                 "business_cost_per_task_by_agent", "business_spend_vs_budget",
                 "business_latency", "business_sla"):
        card = page.locator(f'[data-panel="{name}"]')
        assert int(card.get_attribute("data-rows") or 0) > 0, name
        assert card.locator(".main-svg").count() > 0, name
    bars = page.evaluate("""() => document.querySelector(
        '[data-panel="business_cost_per_task_by_agent"] .chart').data[0].y""")
    assert bars[0] == "agent-overspend-1"
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "business-dashboard.png"), full_page=True)
    assert (shots / "safety-dashboard.png").stat().st_size > 50_000


def test_evidence_opens_from_a_blocked_run(site, page) -> None:
    url, sample = site
    page.goto(f"{url}/#/safety?range=6h&refresh=0&agent=agent-denial-storm-1")
    wait_for_dashboard(page, "safety")
    link = page.locator('[data-panel="safety_blocked_run_list"] a.evidence-link').first
    run_id = link.inner_text()
    link.click()
    page.wait_for_function(
        "() => document.getElementById('evidence-body').dataset.state === 'ready'")
    assert f"run={run_id}" in page.url
    body = page.locator("#evidence-body")
    assert run_id in body.locator('[data-section="summary"]').inner_text()
    assert "agent-denial-storm-1" in body.inner_text()
    blocked = body.locator('[data-section="Blocked actions"] tbody tr').count()
    assert blocked > 0
    steps = body.locator('[data-section="Every step"] tbody tr').count()
    api = page.evaluate("run => fetch('/api/evidence/run/' + run).then(r => r.json())", run_id)
    assert steps == len(api["steps"]) and blocked == len(api["blocked_actions"])
    assert page.locator("#evidence-md").get_attribute("href").endswith("format=markdown")


def test_evidence_by_scope_and_window_shows_what_the_cli_prints(site, page,
                                                                ch_migrated: Client) -> None:
    from tripwire.dashboards.scope_evidence import REVERSIBILITY_ORDER, scope_evidence
    from tripwire.sdk.scopes import Scope

    url, _ = site
    end = now_ms() - 60_000
    since, until = utc_iso(end - 30 * 60_000), utc_iso(end)
    workflow = ch_migrated.query(
        "SELECT toString(workflow) FROM steps WHERE workflow != '' AND action_class IN "
        "('money', 'destructive') GROUP BY workflow ORDER BY count() DESC LIMIT 1"
    ).result_rows[0][0]
    page.goto(f"{url}/#/evidence?refresh=0")
    form = page.locator("#scope-form")
    form.locator('input[name="workflow"]').fill(workflow)
    form.locator('input[name="since"]').fill(since)
    form.locator('input[name="until"]').fill(until)
    form.locator('button[type="submit"]').click()
    page.wait_for_function(
        "() => document.getElementById('evidence-body').dataset.state === 'ready'")
    assert "scope=workflow%3D" in page.url and workflow in page.url
    body = page.locator("#evidence-body")
    assert f"workflow={workflow}" in body.locator('[data-section="summary"]').inner_text()

    # The same content as `tripwire evidence --scope workflow=W --since .. --until ..`.
    cli = scope_evidence(ch_migrated, Scope(workflow=workflow), parse(since), parse(until))
    assert cli.steps, "the sample fleet ran steps in that workflow"
    assert sum(len(v) for v in cli.side_effects.values()) > 0
    for kind in REVERSIBILITY_ORDER:
        rows = body.locator(f'[data-section="{kind}"] tbody tr').count()
        assert rows == len(cli.side_effects.get(kind, [])), kind
    for what, rows in cli.changes.items():
        shown = body.locator(f'[data-section="changed: {what}"] tbody tr').count()
        assert shown == len(rows), what
    assert body.locator('[data-section="Every step"] tbody tr').count() == len(cli.steps)
    assert body.locator('[data-section="Mode changes"] tbody tr').count() == \
        len(cli.mode_changes)
    irreversible = body.locator('[data-section="irreversible"] tbody').inner_text()
    assert all(s["tool"] in irreversible for s in cli.side_effects.get("irreversible", []))
    markdown = page.evaluate("u => fetch(u).then(r => r.text())",
                             page.locator("#evidence-md").get_attribute("href"))
    assert markdown == cli.to_markdown()

    # A tool pattern over the whole fleet, straight from a link; a bad scope is a clear error.
    page.goto(f"{url}/#/evidence?refresh=0&scope=tool%3Dcrm.*&since={since}&until={until}")
    page.wait_for_function(
        "() => document.getElementById('evidence-body').dataset.state === 'ready'"
        " && location.hash.includes('tool')")
    assert page.locator('#scope-form input[name="tool"]').input_value() == "crm.*"
    tools = page.locator('[data-section="Every step"] tbody tr td:nth-child(7)').all_inner_texts()
    assert tools and all(t.startswith("crm.") for t in tools)
    page.goto(f"{url}/#/evidence?refresh=0&scope=team%3Dx&since={since}")
    page.wait_for_function(
        "() => document.getElementById('evidence-body').dataset.state === 'error'")
    assert "scope part" in page.locator("#evidence-body .error").inner_text()


def utc_iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse(text: str) -> int:
    from tripwire.dashboards.filters import parse_instant

    return parse_instant(text)
