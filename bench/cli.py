"""The command line's own costs, as ratios to the bare model, so that they mean the same on a busy machine.

    python bench/cli.py [--model models/default] [--photos 60] [--repeats 3]

- Cold start: `python -m skin_core predict --model M photo.jpg`, from process start to exit, against a bare
  child that imports TensorFlow, loads the bundle's model.keras with Keras and runs one forward pass over the
  bundle's test-time views (the least any tool answering one photo must do).
- Each further photo: `predict --gradcam OUT` on 1 + N photos minus on 1 photo, divided by N (JSON line,
  Grad-CAM overlay and its PNG included), against the bare forward pass over the same views per photo,
  timed in this process.
The photos are 600x450 JPEGs (HAM10000's original size) made from the shipped sample. The runs alternate
(bare, one photo, 1 + N photos) so that drift on the machine touches each alike.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from common import run_main, stats_ms, timed, write

BARE_CHILD = """
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras, numpy as np, tensorflow as tf
from PIL import Image
model = keras.models.load_model({model!r}, compile=False)
size = model.input_shape[1]
x = np.asarray(Image.open({photo!r}).convert("RGB").resize((size, size)), np.float32)[None]
views = [x, np.rot90(x, 1, (1, 2)), np.rot90(x, 2, (1, 2)), np.rot90(x, 3, (1, 2))][:{views}]
model(np.concatenate(views), training=False)
"""


def photos_600x450(folder: Path, n: int) -> list[Path]:
    from PIL import Image
    sources = sorted((ROOT / "sample_data").glob("HAM10000_images_part_*/*.jpg"))
    made = []
    for i in range(n):
        target = folder / f"photo_{i:02d}.jpg"
        with Image.open(sources[i % len(sources)]) as photo:
            photo.convert("RGB").resize((600, 450), Image.Resampling.BILINEAR).save(target, quality=92)
        made.append(target)
    return made


def seconds_of(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def bare_forward_s(bundle, photo: Path, runs: int = 50) -> list[float]:
    """The bare model over the bundle's test-time views of one prepared photo, traced once."""
    import numpy as np
    import tensorflow as tf
    from common import bare_over_views
    from skin_core import images
    forward = bare_over_views(bundle.model, bundle.test_time_augmentation, batch=1)
    x = tf.constant(images.prepare(images.load_file(photo).rgb, bundle.input_size, bundle.detail_side)[None],
                    tf.float32)
    return timed(lambda: [np.asarray(v) for v in forward(x)], runs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--photos", type=int, default=60,
                        help="further photos after the first (with fewer, start-up noise swamps the per-photo cost)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from skin_core.bundle import load_bundle
    from skin_core.options import TTA_VIEWS
    bundle = load_bundle(ROOT / args.model)       # a wrong path is one line here, not a failure in each child
    views = TTA_VIEWS[bundle.test_time_augmentation]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        photos = photos_600x450(scratch, 1 + args.photos)
        predict = [sys.executable, "-m", "skin_core", "predict", "--model", str(ROOT / args.model)]
        bare = [sys.executable, "-c", BARE_CHILD.format(model=str(bundle.path / "model.keras"), photo=str(photos[0]),
                                                        views=views)]
        runs = {"bare_cold_s": [], "cli_one_photo_s": [], "cli_many_photos_s": []}
        for i in range(args.repeats):
            runs["bare_cold_s"].append(seconds_of(bare))
            runs["cli_one_photo_s"].append(seconds_of(predict + [str(photos[0]), "--gradcam", str(scratch / f"a{i}")]))
            runs["cli_many_photos_s"].append(seconds_of(predict + [str(p) for p in photos]
                                                        + ["--gradcam", str(scratch / f"b{i}")]))
        forward = stats_ms(bare_forward_s(bundle, photos[0]))
    median = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
    per_photo_ms = (median["cli_many_photos_s"] - median["cli_one_photo_s"]) / args.photos * 1000
    write("cli", {
        "model": args.model, "test_time_views": views, "photos": "600x450 JPEG", "further_photos": args.photos,
        "runs_s": {k: [round(s, 2) for s in v] for k, v in runs.items()},
        "cold_start_s": round(median["cli_one_photo_s"], 2), "bare_cold_start_s": round(median["bare_cold_s"], 2),
        "cold_start_ratio_to_bare": round(median["cli_one_photo_s"] / median["bare_cold_s"], 2),
        "cold_start_target_s_max": 10,
        "per_further_photo_ms": round(per_photo_ms, 1), "bare_forward_per_photo": forward,
        "per_photo_ratio_to_bare_forward": round(per_photo_ms / forward["p50_ms"], 2),
        "per_further_photo_target_ms_max": 80,
    })


if __name__ == "__main__":
    run_main(main)
