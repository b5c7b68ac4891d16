"""Hostile inputs through every door (decoder, command line, Diagnose page), and the predictor
under concurrent use."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from skin_core import images
from skin_core.predict import Predictor
from conftest import ROOT
from hostile import corpus

CASES = corpus()


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 30
    assert {"refused", "accepted"} == {expected for _, _, expected in CASES}


@pytest.mark.parametrize("name, data, expected", CASES, ids=[ascii(n) for n, _, _ in CASES])
def test_decoder(name, data, expected):
    if expected == "refused":
        with pytest.raises(images.ImageError) as error:
            images.decode(data)
        assert len(str(error.value)) < 200 and "\n" not in str(error.value)
    else:
        decoded = images.decode(data)
        assert decoded.rgb.ndim == 3 and decoded.rgb.shape[2] == 3 and decoded.rgb.dtype == np.uint8


def test_exif_rotated_photo_is_predicted_upright(tiny_bundle):
    predictor = Predictor.from_path(tiny_bundle)
    by_name = {name: data for name, data, _ in CASES}
    upright = predictor.analyse_bytes(by_name["plain.jpg"]).probabilities
    rotated = predictor.analyse_bytes(by_name["exif_rotated.jpg"])
    assert rotated.decoded.size == images.decode(by_name["plain.jpg"]).size
    np.testing.assert_allclose(rotated.probabilities, upright, atol=0.02)


def test_command_line(tiny_bundle, tmp_path):
    paths = []
    for i, (name, data, _) in enumerate(CASES):
        safe = name.replace("/", "_")            # a file system cannot hold '/' in a name
        path = tmp_path / f"{i:02d}_{safe}"
        path.write_bytes(data)
        paths.append(path)
    result = subprocess.run([sys.executable, "-m", "skin_core", "predict", "--model", str(tiny_bundle), *map(str, paths)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    refused = sum(expected == "refused" for _, _, expected in CASES)
    errors = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(errors) == refused and all(line.startswith("error: ") for line in errors)
    assert len(result.stdout.strip().splitlines()) == len(CASES) - refused


def test_diagnose_page(models_dir):
    at = AppTest.from_file(str(ROOT / "app_pages" / "diagnose.py"), default_timeout=300).run()
    # Streamlit refuses other extensions itself, before the page runs; give those files an allowed
    # name so that their bytes reach the page's own checks
    allowed = tuple(f".{ext}" for ext in images.UPLOAD_EXTENSIONS)
    uploads = [(name if name.lower().endswith(allowed) else name + ".png", data, "application/octet-stream")
               for name, data, _ in CASES]
    at.file_uploader[0].set_value(uploads).run()
    assert not at.exception
    refused = sum(expected == "refused" for _, _, expected in CASES)
    assert sum("Cannot use this file" in str(e.value) for e in at.error) == refused
    assert len(at.get("plotly_chart")) == len(CASES) - refused
    shown = " ".join(str(s.value) for s in at.subheader)
    assert "../" not in shown and "\x07" not in shown and "\t" not in shown
    at.run()                                             # and the app keeps serving
    assert not at.exception


def test_predictor_is_safe_under_parallel_use(tiny_bundle):
    predictor = Predictor.from_path(tiny_bundle)
    photos = [images.decode(data) for _, data, expected in CASES if expected == "accepted"][:8]
    serial = [predictor.analyse(photo).probabilities for photo in photos]

    def worker(index):
        return [(index, predictor.analyse(photos[index]).probabilities) for _ in range(50)]

    with ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(worker, range(8)) for r in batch]
    assert len(results) == 400
    for index, probabilities in results:
        np.testing.assert_allclose(probabilities, serial[index], atol=1e-5)


def test_uploads_are_never_written_to_disk(models_dir, tmp_path):
    import io
    import os
    import tempfile
    import uuid
    from PIL import Image, PngImagePlugin
    marker = uuid.uuid4().hex.encode()
    info = PngImagePlugin.PngInfo()
    info.add_text("marker", marker.decode())
    photo = Image.open(next((ROOT / "sample_data" / "HAM10000_images_part_1").glob("*.jpg")))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG", pnginfo=info)
    started = __import__("time").time() - 1
    at = AppTest.from_file(str(ROOT / "app_pages" / "diagnose.py"), default_timeout=120).run()
    at.file_uploader[0].set_value(("private.png", buffer.getvalue(), "image/png")).run()
    assert len(at.get("plotly_chart")) == 1
    written = []
    for top in {ROOT, models_dir.parent, Path(tempfile.gettempdir())}:
        for folder, _, files in os.walk(top):
            for name in files:
                path = Path(folder) / name
                try:
                    if path.stat().st_mtime >= started and path.stat().st_size < 50_000_000:
                        written.append(path)
                except OSError:
                    continue
    leaked = [p for p in written if p.is_file() and marker in p.read_bytes()]
    assert leaked == []
