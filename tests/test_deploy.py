"""What can be checked of the deployment without a container engine: the image's own start command
serves the app and answers its health check, and the deployment files agree with the code."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib

import requests

from skin_core import images
from conftest import ROOT
from test_browser import free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dockerfile_cmd() -> list[str]:
    return json.loads(re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M).group(1))


def test_the_image_start_command_serves_and_passes_its_healthcheck(tmp_path, tiny_bundle):
    port = free_port()
    command = [arg.replace("8501", str(port)).replace("0.0.0.0", "127.0.0.1") for arg in dockerfile_cmd()]
    assert command[:2] == ["streamlit", "run"]
    env = dict(os.environ)
    if not (ROOT / "models" / "default" / "manifest.json").is_file():
        shutil.copytree(tiny_bundle, tmp_path / "models" / "default")
        env["SKIN_MODELS_DIR"] = str(tmp_path / "models")
    process = subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, healthy = time.time() + 90, False
        while time.time() < deadline and not healthy:
            try:
                healthy = requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).text == "ok"
            except requests.RequestException:
                time.sleep(0.5)
        assert healthy
        probe = re.search(r'CMD python -c "(.*)"', DOCKERFILE).group(1).replace("8501", str(port))
        assert subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 0
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_deployment_files_agree_with_the_code():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 1e6 >= images.MAX_BYTES * 0.95
    assert "EXPOSE 8501" in DOCKERFILE and "USER app" in DOCKERFILE and "HEALTHCHECK" in DOCKERFILE
    copied = [source for line in re.findall(r"^COPY (.*)$", DOCKERFILE, re.M)
              for source in [word for word in line.split() if not word.startswith("--")][:-1]]   # the last is the target
    assert {"streamlit_app.py", "train.py", "skin_core/", "models/default/"} <= set(copied)
    for path in copied:
        assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which is missing"
    required = (ROOT / "requirements.txt").read_text()
    assert all("==" in line for line in required.splitlines() if line and not line.startswith("#"))
