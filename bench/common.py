"""Shared helpers for the benchmarks: timing statistics and JSON output."""
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def stats_ms(samples_s) -> dict:
    ms = np.asarray(samples_s) * 1000
    return {"runs": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "mean_ms": round(float(ms.mean()), 2)}


def timed(fn, runs: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def timed_together(fns: dict, runs: int, warmup: int = 10) -> dict[str, list[float]]:
    """Time several paths in alternation, so machine drift during the run affects each alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def bare_over_views(model, tta: str, batch: int | None = None):
    """The bare model over a batch's test-time views, in one traced call as the predictor makes it
    (no calibration, no Grad-CAM): the floor skin_core's paths are compared with."""
    import tensorflow as tf
    from skin_core import predict
    size = model.input_shape[1]
    return tf.function(lambda t: [model(view, training=False) for view in predict.views(t, tta)],
                       input_signature=[tf.TensorSpec((batch, size, size, 3), tf.float32)])


def write(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "time": time.strftime("%Y-%m-%d %H:%M"),
              **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return path


def run_main(main) -> None:
    """Run a benchmark's main(): a wrong bundle or dataset path is a one-line error, not a traceback."""
    from skin_core.bundle import BundleError
    from skin_core.data import DatasetError
    try:
        main()
    except (BundleError, DatasetError, OSError) as exc:
        raise SystemExit(f"error: {getattr(exc, 'strerror', None) or exc}") from None
