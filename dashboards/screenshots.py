"""Screenshots of both dashboards with a simulated fleet, for docs/ and the README.

``python -m tripwire.dashboards.screenshots [--out docs]`` fills a temporary embedded ClickHouse
with :mod:`tripwire.dashboards.sample_fleet`, serves the dashboards from it and photographs them
with Debian's headless chromium (``scripts/setup_browser.sh`` installs it). The browser test uses
the same launcher, so what the screenshots show is what the test checked.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # we run as root in CI and containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
VIEWPORT = {"width": 1440, "height": 1000}
PAGE_TIMEOUT_MS = 30_000


@contextmanager
def chromium_page() -> Iterator[Any]:
    """A playwright page in Debian's chromium with a fresh profile; never downloads a browser."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/setup_browser.sh")
    profile = tempfile.mkdtemp(prefix="tripwire-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=list(CHROMIUM_FLAGS),
                viewport=VIEWPORT,
                timezone_id="UTC",
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(PAGE_TIMEOUT_MS)
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def wait_for_dashboard(page: Any, view: str) -> None:
    """Until every panel of ``view`` has rendered (or failed) after the latest load."""
    page.wait_for_function(
        """view => {
            const grid = document.getElementById('dashboard');
            const cards = [...grid.querySelectorAll('.panel')];
            return grid.dataset.view === view && grid.dataset.loaded && cards.length > 0
                && cards.every(c => c.dataset.state === 'ready' || c.dataset.state === 'error');
        }""",
        arg=view,
    )


def shoot(base_url: str, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = []
    with chromium_page() as page:
        for view in ("safety", "business"):
            page.goto(f"{base_url}/#/{view}?range=6h&refresh=0")
            wait_for_dashboard(page, view)
            page.wait_for_timeout(500)  # plotly finishes its transitions
            path = out_dir / f"{view}-dashboard.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)
    return shots


def main(argv: list[str] | None = None) -> int:
    from tripwire.dashboards.sample_fleet import fill
    from tripwire.dashboards.server import DashboardServer
    from tripwire.sinks.clickhouse import connect
    from tripwire.sinks.migrations import migrate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs"))
    args = p.parse_args(argv)
    data = tempfile.mkdtemp(prefix="tripwire-shots-")
    client = connect(f"chdb://{data}")
    try:
        migrate(client, 90)
        from tripwire.dashboards.filters import now_ms

        sample = fill(client, end_ms=now_ms() - 60_000, hours=3.0)
        print(f"sample fleet: {sample.steps} steps, {len(sample.detections)} detections, "
              f"{len(sample.mode_changes)} mode changes")
        with DashboardServer(client, port=0) as server:
            for path in shoot(server.url, args.out):
                print(f"wrote {path}")
    finally:
        client.close()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
