"""The dashboard as a user sees it: `streamlit run` over a seeded MLflow store, rendered by headless
Chromium through Playwright. AppTest checks what the pages emit; this checks that the browser
renders it (tables, charts, verdict) without a Streamlit exception box, and keeps screenshots.

Screenshots go to $PHARIA_SCREENSHOTS when set (to look at them), else to tmp_path.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_dashboard import MODEL, seed_store

from pharia.workspace import Workspace

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    home = tmp_path_factory.mktemp("browser") / "home"
    Workspace(home).ensure()
    seed_store(home)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"PHARIA_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    log = (home / "streamlit.log").open("wb")
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboards" / "app.py"), "--server.headless", "true"]
    cmd += ["--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    cmd += ["--client.toolbarMode", "minimal"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (home / "streamlit.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("PHARIA_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def _open(browser, url: str, ready: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector(ready, timeout=60_000)
    page.wait_for_timeout(1500)  # let charts finish their first layout before the screenshot
    assert page.locator('[data-testid="stException"]').count() == 0
    nav = page.get_by_test_id("stSidebarNav").inner_text().split()  # icon ligature names included
    assert [w for w in nav if w[0].isupper()] == ["Models", "Runs", "Compliance"] and "app" not in nav
    return page


@pytest.mark.parametrize(
    ("path", "ready", "expected"),
    # A deep link first: a fresh server must route /compliance through app.py's navigation too.
    [
        ("compliance", '[data-testid="stAlert"]', ["Verdict: PASS", "Requirements passed"]),
        ("", '[data-testid="stDataFrame"]', [MODEL, "Versions passing compliance"]),
        ("runs", '[data-testid="stVegaLiteChart"]', ["Training loss", "Held-out perplexity by domain"]),
    ],
)
def test_pages_render_in_chromium(browser, dashboard_url: str, shots: Path, path, ready, expected) -> None:
    page = _open(browser, f"{dashboard_url}/{path}", ready)
    body = page.inner_text("body")
    for text in expected:
        assert text in body
    page.screenshot(path=str(shots / f"dashboard-{path or 'models'}.png"), full_page=True)
    page.close()


def test_compliance_tabs_render(browser, dashboard_url: str, shots: Path) -> None:
    page = _open(browser, f"{dashboard_url}/compliance", '[data-testid="stAlert"]')
    for tab in ("Data", "Training & evaluation", "Lineage & approvals"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(800)
        slug = tab.split()[0].lower()
        page.screenshot(path=str(shots / f"dashboard-compliance-{slug}.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.close()


def test_failing_version_shows_a_red_verdict(browser, dashboard_url: str, shots: Path) -> None:
    page = _open(browser, f"{dashboard_url}/compliance", '[data-testid="stAlert"]')
    page.get_by_test_id("stSelectbox").nth(1).click()
    page.get_by_role("option", name="v2 · fail").click()
    page.get_by_text("Verdict: FAIL").wait_for(timeout=30_000)
    page.wait_for_timeout(800)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(shots / "dashboard-compliance-fail.png"), full_page=True)
    page.close()
