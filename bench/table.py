"""Render the latest bench/results/*.json as the markdown table in bench/README.md.

    python bench/table.py          # rewrites the part of bench/README.md between the results markers
"""
import json
from pathlib import Path

from common import RESULTS

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def rows() -> list[str]:
    out = ["| measure | figure | target | |", "|---|---|---|---|"]
    lat = load("latency")
    if lat:
        bare, e2e = lat["bare_forward_tf_function"], lat["predict_plus_gradcam_end_to_end"]
        out += [
            f"| bare forward pass, batch 1 (tf.function), timed in turn with the paths below | p50 {bare['p50_ms']} ms, "
            f"p95 {bare['p95_ms']} ms | floor | |",
            f"| the same, back to back (caches hot) | p50 {lat['bare_forward_back_to_back']['p50_ms']} ms | "
            f"most flattering floor | |",
            f"| bare forward over the {lat['test_time_views']} test-time views | "
            f"p50 {lat['bare_forward_same_views']['p50_ms']} ms | floor of the served configuration | |",
            f"| skin_core predict (prepared picture) | p50 {lat['skin_core_predict']['p50_ms']} ms, "
            f"p95 {lat['skin_core_predict']['p95_ms']} ms | | |",
            f"| **predict + Grad-CAM, JPEG bytes to overlay** | p50 {e2e['p50_ms']} ms, p95 {e2e['p95_ms']} ms "
            f"({lat['end_to_end_over_bare_p50']}x bare; {lat['end_to_end_over_back_to_back_bare_p50']}x the back-to-back "
            f"floor) | ≤ 60 ms and ≤ 3x bare | "
            f"{verdict(e2e['p50_ms'] <= 60 and lat['end_to_end_over_bare_p50'] <= 3)} |",
            f"| before: the same with 4 flip views in one batch, a Jacobian for Grad-CAM, the matplotlib overlay | "
            f"p50 {lat['earlier_end_to_end_four_views']['p50_ms']} ms | | |",
            f"| before: keras `model.predict`, batch 1 | p50 {lat['keras_model_predict']['p50_ms']} ms | | |",
            f"| before: eager Grad-CAM beside a separate predict | p50 {lat['eager_gradcam_beside_predict']['p50_ms']} ms "
            f"| | |",
        ]
        phone = lat.get("phone_photo_12mp")
        if phone:
            width, height = phone["decoded_size"]
            out.append(f"| predict + Grad-CAM from a 12-megapixel phone JPEG (decoded reduced, at {width}x{height}) | "
                       f"p50 {phone['predict_plus_gradcam_end_to_end']['p50_ms']} ms; decoding p50 "
                       f"{phone['decode_reduced']['p50_ms']} ms (whole, as before: {phone['decode_whole']['p50_ms']} ms)"
                       f" | | |")
    cold = load("cold_start")
    if cold:
        out.append(f"| cold start: new process to first prediction | median {cold['median_s']} s "
                   f"(runs {', '.join(map(str, cold['seconds']))}) | ≤ 10 s | {verdict(cold['median_s'] <= 10)} |")
    cli = load("cli")
    if cli:
        out += [
            f"| command line cold start: `python -m skin_core predict` on one photo, process start to exit | median "
            f"{cli['cold_start_s']} s ({cli['cold_start_ratio_to_bare']}x a bare process that imports TensorFlow, loads "
            f"the model and runs one forward pass: {cli['bare_cold_start_s']} s) | ≤ 10 s | "
            f"{verdict(cli['cold_start_s'] <= cli['cold_start_target_s_max'])} |",
            f"| command line, each further photo with `--gradcam` (JSON line, overlay PNG) | {cli['per_further_photo_ms']} ms "
            f"({cli['per_photo_ratio_to_bare_forward']}x the bare forward over the {cli['test_time_views']} views, "
            f"p50 {cli['bare_forward_per_photo']['p50_ms']} ms) | ≤ 80 ms | "
            f"{verdict(cli['per_further_photo_ms'] <= cli['per_further_photo_target_ms_max'])} |",
        ]
    rerun = load("diagnose_rerun")
    if rerun:
        runs = rerun["runs"]
        figures = "; ".join(f"{label} ({run['commit']}): p50 {run['opacity_move_to_new_overlay']['p50_ms']} ms, p95 "
                            f"{run['opacity_move_to_new_overlay']['p95_ms']} ms" for label, run in runs.items())
        out.append(f"| Diagnose page in Chromium: opacity moved to new overlay shown, {rerun['moves']} moves | {figures} | | |")
    thr = load("throughput")
    if thr:
        ev, tr = thr["evaluation"], thr["training"]
        out += [
            f"| evaluation, batch {thr['batch']} | {ev['skin_core_images_per_s']:.1f} img/s vs bare "
            f"{ev['bare_model_same_views_images_per_s']:.1f} img/s over the same {ev['test_time_views']} views: "
            f"ratio {ev['ratio']:.2f} (one view, bare: {ev['bare_model_one_view_images_per_s']:.1f} img/s) | ≥ 0.8 | "
            f"{verdict(ev['ratio'] >= 0.8)} |",
            f"| training, batch {thr['batch']} | tf.data pipeline {tr['pipeline_images_per_s']:.1f} img/s vs model fed "
            f"from memory {tr['memory_images_per_s']:.1f} img/s: ratio {tr['ratio']:.2f} (median of "
            f"{len(tr.get('ratio_per_round', []))} interleaved rounds: "
            f"{', '.join(f'{r:.2f}' for r in tr.get('ratio_per_round', []))}) | ≥ 0.9 | "
            f"{verdict(tr['ratio'] >= 0.9)} |",
            f"| before: training with three separate Keras augmentation layers | "
            f"{tr['earlier_pipeline_images_per_s']:.1f} img/s: ratio {tr['earlier_ratio']:.2f} | | |",
        ]
        if "camera_ratio" in tr:
            out.append(f"| training with the camera changes (--photometric --compression) | "
                       f"{tr['camera_pipeline_images_per_s']:.1f} img/s: ratio {tr['camera_ratio']:.2f} | ≥ 0.9 | "
                       f"{verdict(tr['camera_ratio'] >= 0.9)} |")
    rep = load("report")
    if rep:
        for key, label in (("report_intervals", "95% intervals of an evaluation report"),
                           ("paired_comparison", "paired comparison behind the 90% rule")):
            r = rep[key]
            out.append(f"| {label}: {r['resamples']} lesion resamples of the {r['subset']} split ({r['images']} images, "
                       f"{r['lesions']} lesions) | {r['seconds']} s (before: one scikit-learn call per resample, "
                       f"{r['earlier_seconds']} s) | | |")
    mem = load("memory")
    if mem:
        out.append(f"| resident memory over {mem['predictions']} predictions with Grad-CAM | +{mem['rss_growth_mb']} MB "
                   f"(from {mem['rss_before_mb']} MB) | < 50 MB | {verdict(mem['rss_growth_mb'] < 50)} |")
    tfl = load("tflite")
    for key, label in (("tflite_none", "float32"), ("tflite_float16", "float16"), ("tflite_int8", "int8")):
        if key in tfl:
            e = tfl[key]
            accuracy = (f"; test accuracy {e['test_accuracy']:.3f}, balanced {e['test_balanced_accuracy']:.3f}, "
                        f"top-1 agreement with Keras {e['top1_agreement_with_keras']:.3f}") if "test_accuracy" in e else ""
            out.append(f"| TFLite {label} ({e['size_mb']} MB), batch 1 | p50 {e['p50_ms']} ms{accuracy} | | |")
    if "tflite_float16_as_served" in tfl:
        e = tfl["tflite_float16_as_served"]
        own = e.get("app_own")
        target = ("the app's own figures" if own is None else f"the app's own: {own['test_accuracy']:.3f}, balanced "
                  f"{own['test_balanced_accuracy']:.3f}")
        matched = "" if own is None else verdict(
            abs(own["test_accuracy"] - e["test_accuracy"]) <= 0.01
            and abs(own["test_balanced_accuracy"] - e["test_balanced_accuracy"]) <= 0.01)
        details = ", each image's age, sex and body site" if e.get("patient_details") else ""
        out.append(f"| TFLite float16 served as the app serves ({len(e['views'])} views, logit bias and temperature from "
                   f"its sidecar{details}) | test accuracy {e['test_accuracy']:.3f}, balanced "
                   f"{e['test_balanced_accuracy']:.3f} | {target} | {matched} |")
    if "keras_test_single_pass" in tfl:
        k = tfl["keras_test_single_pass"]
        out.append(f"| Keras, same one-view pass on the {k['test_images']} test images | test accuracy "
                   f"{k['test_accuracy']:.3f}, balanced {k['test_balanced_accuracy']:.3f} | | |")
    times = sorted(result["time"] for result in (lat, cold, cli, rerun, thr, rep, mem, tfl) if result.get("time"))
    stamp = times[0] if len(times) < 2 or times[0] == times[-1] else f"between {times[0]} and {times[-1]}"
    out.append("")
    out.append(f"Model `{lat.get('model', 'models/default')}`, {lat.get('machine', '')}, measured {stamp} "
               "(each JSON's `time`).")
    return out


def main():
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(head + START + "\n" + "\n".join(rows()) + "\n" + END + tail)
    print("\n".join(rows()))


if __name__ == "__main__":
    main()
