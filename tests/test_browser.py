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


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_bundle):
    """`streamlit run` serving models/default (or the tiny test bundle before one is committed)."""
    env = {k: v for k, v in os.environ.items() if k != "SKIN_ADMIN_PASSWORD"}     # a local run: no password
    if not (DEFAULT_BUNDLE / "manifest.json").is_file():
        models = tmp_path_factory.mktemp("served") / "models"
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
        page.goto(server, timeout=120_000)   # a busy machine can take more than the default 30 s
        page.locator('input[type="file"]').first.set_input_files(str(photo), timeout=60_000)
        page.get_by_text("Top 3:").wait_for(timeout=90_000)
        page.get_by_text("Grad-CAM for").first.wait_for(timeout=30_000)
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=30_000)
        assert page.get_by_text("not a medical device").count() >= 1
        page.screenshot(path=str(ARTIFACTS / "diagnose.png"), full_page=True)
        chrome.close()
    assert (ARTIFACTS / "diagnose.png").stat().st_size > 10_000


def test_the_retrain_page_opened_by_its_address_shows_the_launch_form_and_the_app_around_it(server):
    """A bookmarked or shared /retrain link: the page runs inside the app (its navigation and sidebar), and
    without a password on a local run the launch form is there to use."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chrome = browser(playwright)
        page = chrome.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(f"{server}/retrain", timeout=120_000)
        page.get_by_text("Launch a training run").wait_for(timeout=90_000)
        page.get_by_text("Epochs", exact=True).wait_for(timeout=30_000)
        launch = page.get_by_role("button", name="Launch", exact=True)
        assert launch.is_visible() and launch.is_enabled()
        sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
        assert "Active model" in sidebar and "Diagnose" in sidebar
        assert "common" not in sidebar.lower().split()          # the helpers module is not a page
        chrome.close()


SESSIONS = 4


def distinct_answers(bundle_path, n):
    """n sample photos whose top classes all differ under the served model, with those answers."""
    from skin_core.classes import full_name
    from skin_core.predict import Predictor
    predictor = Predictor.from_path(bundle_path)
    chosen, tops = [], set()
    for photo in sorted(SAMPLE.glob("HAM10000_images_part_*/*.jpg")):
        top = predictor.analyse_bytes(photo.read_bytes()).ranked()[0][0]
        if top not in tops:
            chosen.append((photo, full_name(top)))
            tops.add(top)
        if len(chosen) == n:
            return chosen
    pytest.skip("the served model gives fewer distinct answers than sessions")


def test_concurrent_browser_sessions_each_get_their_own_result(server):
    """Several people at once: each session uploads a different photo and sees its own answer only."""
    import asyncio
    from playwright.async_api import async_playwright
    served = DEFAULT_BUNDLE if (DEFAULT_BUNDLE / "manifest.json").is_file() else None
    if served is None:
        pytest.skip("needs the committed default model")
    cases = distinct_answers(served, SESSIONS)

    async def session(chrome, photo, answer, index):
        context = await chrome.new_context(viewport={"width": 1400, "height": 1600})
        page = await context.new_page()
        await page.goto(server, timeout=120_000)   # four sessions at once load slowly on 2 cores
        await page.locator('input[type="file"]').first.set_input_files(str(photo), timeout=120_000)
        await page.get_by_text("Most likely:").first.wait_for(timeout=240_000)
        await page.get_by_text("Top 3:").first.wait_for(timeout=120_000)
        await page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=120_000)
        shown = await page.locator('[data-testid="stMain"]').inner_text()
        await page.screenshot(path=str(ARTIFACTS / f"session_{index}.png"))
        await context.close()
        return shown

    async def everyone():
        async with async_playwright() as playwright:
            chrome = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
            pages = await asyncio.gather(*(session(chrome, photo, answer, i)
                                           for i, (photo, answer) in enumerate(cases)))
            await chrome.close()
            return pages

    ARTIFACTS.mkdir(exist_ok=True)
    pages = asyncio.run(everyone())
    for (photo, answer), shown in zip(cases, pages):
        assert photo.name in shown and f"Most likely: {answer}" in shown
        others = [p.name for p, _ in cases if p != photo]
        assert not any(name in shown for name in others), "a session shows another session's upload"
        assert shown.count("Most likely:") == 1
    assert requests.get(f"{server}/_stcore/health", timeout=5).text == "ok"
