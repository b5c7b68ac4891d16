"""How long the Diagnose page takes, in a real browser, to redraw after the heat-map opacity is moved.

    python bench/diagnose_rerun.py [--app-root .] [--label after] [--moves 10]

Starts `streamlit run` from --app-root (another checkout of the project can be timed with the same
environment: `git worktree add /tmp/before COMMIT`, then `--app-root /tmp/before --label before`), uploads
one 600x450 JPEG in Debian's Chromium, waits for the answer, then moves the opacity slider --moves times
and times each move from the key press to the moment the overlay image on the page has changed. The result
is added under --label to bench/results/diagnose_rerun.json, so the two checkouts' figures sit side by side.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from common import RESULTS, stats_ms, write

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
OVERLAY = "document.querySelectorAll('[data-testid=\"stImage\"] img, [data-testid=\"stImageContainer\"] img')"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(app_root: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "SKIN_ADMIN_PASSWORD"}
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless",
                                "true", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                               cwd=app_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).text == "ok":
                return process
        except requests.RequestException:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("error: streamlit did not start")


def photo_600x450(folder: Path) -> Path:
    from PIL import Image
    source = next((ROOT / "sample_data" / "HAM10000_images_part_1").glob("*.jpg"))
    target = folder / "lesion.jpg"
    Image.open(source).convert("RGB").resize((600, 450)).save(target, quality=92)
    return target


def time_moves(url: str, photo: Path, moves: int) -> list[float]:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = chrome.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(url, timeout=120_000)
        page.locator('input[type="file"]').first.set_input_files(str(photo), timeout=60_000)
        page.get_by_text("Grad-CAM for").first.wait_for(timeout=120_000)
        slider = page.get_by_role("slider").first
        seconds = []
        for _ in range(moves):
            before = page.evaluate(f"Array.from({OVERLAY}).map(i => i.src).join('|')")
            start = time.perf_counter()
            slider.press("ArrowRight")
            page.wait_for_function(f"before => Array.from({OVERLAY}).map(i => i.src).join('|') !== before",
                                   arg=before, timeout=60_000)
            seconds.append(time.perf_counter() - start)
            page.wait_for_timeout(300)        # let the run finish before the next move
        chrome.close()
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--app-root", default=str(ROOT))
    parser.add_argument("--label", default="after")
    parser.add_argument("--moves", type=int, default=10)
    args = parser.parse_args()
    port = free_port()
    server = serve(Path(args.app_root), port)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            seconds = time_moves(f"http://127.0.0.1:{port}", photo_600x450(Path(scratch)), args.moves)
    finally:
        server.terminate()
        server.wait(timeout=30)
    previous = RESULTS / "diagnose_rerun.json"
    runs = json.loads(previous.read_text()).get("runs", {}) if previous.is_file() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.app_root, capture_output=True,
                            text=True).stdout.strip()
    runs[args.label] = {"commit": commit, "opacity_move_to_new_overlay": stats_ms(seconds)}
    write("diagnose_rerun", {"photo": "600x450 JPEG", "moves": args.moves, "runs": runs})


if __name__ == "__main__":
    main()
