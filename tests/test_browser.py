"""One real browser: Debian's Chromium, driven by Playwright, against `streamlit run`."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import DEFAULT_BUNDLE, ROOT, SAMPLE

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-results"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def server(tmp_path, tiny_bundle):
    """`streamlit run` serving models/default (or the tiny test bundle before one is committed)."""
    env = dict(os.environ)
    if not (DEFAULT_BUNDLE / "manifest.json").is_file():
        models = tmp_path / "models"
        shutil.copytree(tiny_bundle, models / "default")
        env["SKIN_MODELS_DIR"] = str(models)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless",
                                "true", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                break
        except requests.RequestException:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("streamlit did not start")
    yield url
    process.terminate()
    process.wait(timeout=20)


def browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"])


def test_upload_in_a_real_browser_shows_probabilities_and_overlay(server):
    from playwright.sync_api import sync_playwright
    photo = next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chrome = browser(playwright)
        page = chrome.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(server)
        page.locator('input[type="file"]').first.set_input_files(str(photo), timeout=60_000)
        page.get_by_text("Top 3:").wait_for(timeout=90_000)
        page.get_by_text("Grad-CAM for").first.wait_for(timeout=30_000)
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=30_000)
        assert page.get_by_text("not a medical device").count() >= 1
        page.screenshot(path=str(ARTIFACTS / "diagnose.png"), full_page=True)
        chrome.close()
    assert (ARTIFACTS / "diagnose.png").stat().st_size > 10_000
