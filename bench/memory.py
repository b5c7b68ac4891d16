"""Resident memory over 1,000 predictions with Grad-CAM in one process (a leak would show here).

    python bench/memory.py [--model models/default] [--runs 1000]
"""
import argparse

import psutil

from common import run_main, write
from latency import jpeg_600x450
from skin_core import explain
from skin_core.predict import Predictor


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    predictor = Predictor.from_path(args.model)
    data = jpeg_600x450()
    process = psutil.Process()

    def once():
        analysis = predictor.analyse_bytes(data)
        explain.png_bytes(explain.overlay(explain.display_square(analysis.decoded.rgb), analysis.cams[..., 0]))

    for _ in range(50):
        once()
    before = process.memory_info().rss
    samples = []
    for i in range(args.runs):
        once()
        if (i + 1) % 100 == 0:
            samples.append(round((process.memory_info().rss - before) / 1e6, 1))
    growth = (process.memory_info().rss - before) / 1e6
    write("memory", {"model": args.model, "predictions": args.runs, "rss_before_mb": round(before / 1e6, 1),
                     "rss_growth_mb": round(growth, 1), "growth_every_100_mb": samples, "target_growth_mb_max": 50})


if __name__ == "__main__":
    run_main(main)
