"""Real browser: Playwright drives Debian's Chromium through the main flow (Home -> Model -> train on the demo ->
Unlearning with the default methods: D2D-R aimed at the target and the linear eraser).

The server is started the way Streamlit's own end-to-end suite does it. Skipped when /usr/bin/chromium is
missing, except under CI (REQUIRE_BROWSER=1), where that is a failure.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-quic", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the Streamlit server did not become healthy within 60 s: " + process.stdout.read().decode()[-2000:])
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def test_main_flow_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
        expect(page.get_by_text("Privacy audit for recommender systems").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Compute device:").first).to_be_visible()  # chosen once, named in the sidebar

        page.get_by_role("link", name="Model").click()
        expect(page.get_by_text("Users", exact=True)).to_be_visible(timeout=60_000)
        slider = page.get_by_role("slider", name="Maximum epochs")
        slider.focus()
        page.keyboard.press("Home")  # the epochs slider to its minimum, then two steps up, as a person could
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        expect(slider).to_have_value("3")
        page.get_by_role("button", name="Train").click()
        # the metrics table is drawn on a canvas; its caption and the trained model's summary are DOM text
        expect(page.get_by_text("Recommendation quality")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("trained BPR-MF (3 epochs").first).to_be_visible()
        expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible()
        page.screenshot(path=str(tmp_path / "model.png"), full_page=True)
        assert page.locator("[data-testid='stException']").count() == 0

        page.get_by_role("link", name="Unlearning").click()
        expect(page.get_by_role("button", name="Run unlearning")).to_be_visible(timeout=60_000)
        page.get_by_role("button", name="Run unlearning").click()
        # the heading, not the caption above it ("… compare methods side by side"), which is there before the run;
        # D2D-R searches its strength until the full audit verifies the target, which takes a while on a CPU
        expect(page.get_by_role("heading", name="Side by side")).to_be_visible(timeout=480_000)
        # the table is drawn on a canvas; each run's notes are DOM text (D2D-R says whether it reached the target)
        expect(page.get_by_text("target |AUC − 0.5| ≤ 0.05").first).to_be_visible()
        expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible()
        expect(page.locator("[data-testid='stPlotlyChart']").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(tmp_path / "unlearning.png"), full_page=True)
        assert page.locator("[data-testid='stException']").count() == 0
        browser.close()
