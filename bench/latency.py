"""Single-image latency: bare forward pass, skin_core predict, and predict + Grad-CAM end to end.

    python bench/latency.py [--model models/default] [--runs 200]

The paths are timed in alternation (one call of each per round), so they see the same machine.
The floor is a tf.function forward pass at batch 1 with a fixed input signature. "predict" is the
Predictor's traced logits call on a prepared picture. "predict + Grad-CAM" starts from the bytes of a
600x450 JPEG and ends with calibrated probabilities and a ready overlay image, as the Diagnose page does.
For comparison, side by side in the same run, it also times the slower paths the predictor replaced:
keras model.predict, an eager Grad-CAM beside a separate prediction, and the earlier end-to-end path
(four flip views stacked into one batch, Grad-CAM through a batch Jacobian, the overlay coloured
through matplotlib per pixel, the display square resized). "bare_forward_same_views" is the floor
for the served configuration: the bare model over the views the bundle's test-time augmentation
averages. "phone_photo_12mp" times the same end-to-end path from a 4032x3024 JPEG (a phone's 12
megapixels: the photo enlarged, with a little noise so that it compresses like a camera's picture),
and its decoding alone, as images.decode does it (reduced as it decodes) and whole, as it did before.
"""
import argparse
import io
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from common import bare_over_views, run_main, stats_ms, timed, timed_together, write
from skin_core import explain, images
from skin_core.model import LAST_CONV_LAYER
from skin_core.options import TTA_VIEWS
from skin_core.predict import Predictor

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def jpeg_600x450() -> bytes:
    photo = Image.open(next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))).resize((600, 450))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def jpeg_12mp() -> bytes:
    photo = Image.open(next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))).resize((4032, 3024))
    noisy = np.asarray(photo, np.float32) + np.random.default_rng(0).normal(0, 4, (3024, 4032, 3))
    buffer = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def eager_gradcam(model, x):
    """The textbook path: a separate model.predict plus a GradientTape over the whole network."""
    grad_model = tf.keras.Model(model.input, [model.get_layer(LAST_CONV_LAYER).output, model.output])
    model.predict(x, verbose=0)
    with tf.GradientTape() as tape:
        features, probs = grad_model(x)
        score = probs[:, int(tf.argmax(probs[0]))]
    grads = tape.gradient(score, features)
    return tf.nn.relu(tf.reduce_sum(features * tf.reduce_mean(grads, axis=(1, 2), keepdims=True), -1))


def earlier_forward(model):
    """The traced call as first written: four flip views stacked along the batch, Grad-CAM weights from
    a batch Jacobian of the logits with respect to the last block's features."""
    features_model = tf.keras.Model(model.input, model.get_layer(LAST_CONV_LAYER).output)
    pool, dense = model.get_layer("pool"), model.get_layer("logits")

    @tf.function(input_signature=[tf.TensorSpec((None, model.input_shape[1], model.input_shape[2], 3), tf.float32)])
    def with_cams(x):
        stacked = tf.concat([x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]], axis=0)
        features = features_model(stacked, training=False)
        with tf.GradientTape() as tape:
            tape.watch(features)
            logits = dense(pool(features))
        weights = tf.reduce_mean(tape.batch_jacobian(logits, features), axis=[2, 3])
        cams = tf.nn.relu(tf.einsum("bhwk,bck->bhwc", features, weights))
        a, b, c, d = tf.split(cams, 4)
        cams = (a + b[:, :, ::-1] + c[:, ::-1] + d[:, ::-1, ::-1]) / 4
        cams = tf.math.divide_no_nan(cams, tf.reduce_max(cams, axis=[1, 2], keepdims=True))
        return tf.nn.softmax(tf.add_n(tf.split(logits, 4)) / 4), cams

    return with_cams


def earlier_overlay(rgb, cam, opacity=0.45):
    """The overlay as first written: matplotlib's colormap called on every pixel, a resized display square."""
    from matplotlib import colormaps
    square = Image.fromarray(images.centre_square(rgb)).resize((448, 448), Image.Resampling.BILINEAR)
    rgb = np.asarray(square)
    heat = Image.fromarray((np.clip(cam, 0, 1) * 255).astype(np.uint8)).resize((448, 448), Image.Resampling.BICUBIC)
    colours = colormaps["jet"](np.asarray(heat) / 255.0)[..., :3] * 255.0
    return ((1 - opacity) * rgb.astype(np.float32) + opacity * colours).clip(0, 255).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    predictor = Predictor.from_path(args.model)
    model, size = predictor.bundle.model, predictor.input_size
    data = jpeg_600x450()
    x = tf.convert_to_tensor(predictor.prepare(images.decode(data).rgb)[None], tf.float32)
    bare = tf.function(lambda t: model(t, training=False),
                       input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32)])

    views = TTA_VIEWS[predictor.tta]
    bare_views = bare_over_views(model, predictor.tta, batch=1)
    earlier = earlier_forward(model)

    def end_to_end(photo=data):
        analysis = predictor.analyse_bytes(photo)
        top = int(analysis.probabilities.argmax())
        explain.overlay(explain.display_square(analysis.decoded.rgb), analysis.cams[..., top])

    def earlier_end_to_end():
        decoded = images.decode(data)
        probs, cams = earlier(tf.convert_to_tensor(predictor.prepare(decoded.rgb)[None], tf.float32))
        earlier_overlay(decoded.rgb, cams.numpy()[0][..., int(probs.numpy()[0].argmax())])

    fast = timed_together({"bare_forward_tf_function": lambda: bare(x).numpy(),
                           "bare_forward_same_views": lambda: [v.numpy() for v in bare_views(x)],
                           "skin_core_predict": lambda: predictor.logits(x.numpy()),
                           "predict_plus_gradcam_end_to_end": end_to_end,
                           "earlier_end_to_end_four_views": earlier_end_to_end}, args.runs)
    results = {name: stats_ms(samples) for name, samples in fast.items()}
    # the floor at its most flattering: the same call back to back, caches hot
    results["bare_forward_back_to_back"] = stats_ms(timed(lambda: bare(x).numpy(), args.runs))
    results["keras_model_predict"] = stats_ms(timed(lambda: model.predict(x, verbose=0), 30, warmup=3))
    results["eager_gradcam_beside_predict"] = stats_ms(timed(lambda: eager_gradcam(model, x), 20, warmup=2))
    phone = jpeg_12mp()
    phone_runs = timed_together({
        "predict_plus_gradcam_end_to_end": lambda: end_to_end(phone),
        "decode_reduced": lambda: images.decode(phone),
        "decode_whole": lambda: np.asarray(Image.open(io.BytesIO(phone)).convert("RGB"))}, max(10, args.runs // 5),
        warmup=3)
    results["phone_photo_12mp"] = {"bytes": len(phone), "decoded_size": list(images.decode(phone).size),
                                   **{name: stats_ms(samples) for name, samples in phone_runs.items()}}
    ratio = results["predict_plus_gradcam_end_to_end"]["p50_ms"] / results["bare_forward_tf_function"]["p50_ms"]
    write("latency", {"model": args.model, "input_size": size, "test_time_views": views, "threads": {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        **results, "end_to_end_over_bare_p50": round(ratio, 2),
        "end_to_end_over_back_to_back_bare_p50": round(
            results["predict_plus_gradcam_end_to_end"]["p50_ms"] / results["bare_forward_back_to_back"]["p50_ms"], 2),
        "targets": {"end_to_end_over_bare_p50_max": 3.0, "end_to_end_p50_ms_max": 60}})


if __name__ == "__main__":
    run_main(main)
