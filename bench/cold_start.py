"""Cold start: a new process from interpreter start to its first prediction (import, load, warm up).

    python bench/cold_start.py [--model models/default] [--repeats 3]
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import run_main, write

CHILD = """
from skin_core.predict import Predictor
from skin_core import images
p = Predictor.from_path({model!r})
p.analyse(images.load_file({image!r}))
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    from skin_core.bundle import read_manifest
    read_manifest(root / args.model)         # a wrong path is one line here, not a traceback in each child
    image = next((root / "sample_data" / "HAM10000_images_part_1").glob("*.jpg"))
    code = CHILD.format(root=str(root), model=str(root / args.model), image=str(image))
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        seconds.append(round(time.perf_counter() - start, 2))
    write("cold_start", {"model": args.model, "seconds": seconds, "median_s": sorted(seconds)[len(seconds) // 2],
                         "target_s_max": 10})


if __name__ == "__main__":
    run_main(main)
