"""Grad-CAM for the bundle's MobileNet, computed in the same traced call as the prediction,
and the heat-map overlay a user sees.

Grad-CAM weights each channel of the last convolutional block by the mean gradient of a class
logit with respect to it. Between that block and the logits there is only pooling and a dense
layer, so that gradient is the dense kernel itself and the maps of all classes come without a
backward pass, in the same call: the page can switch the explained class without another pass.
"""
from __future__ import annotations

from functools import lru_cache, partial

import numpy as np
import tensorflow as tf
from matplotlib import colormaps
from PIL import Image

from . import images
from .model import LAST_CONV_LAYER, LOGITS_LAYER, POOL_LAYER
from .options import TTA_VIEW_NAMES, TTA_VIEWS

import keras


def views(images, tta: str) -> list:
    """The picture and its extra views (options.TTA_VIEW_NAMES), each its own batch of the same size."""
    return [_VIEW_OPERATIONS[name](images) for name in TTA_VIEW_NAMES[tta]]


def _turn(batch, quarters: int):
    """A batch (b, h, w, c) turned counter-clockwise by quarters x 90 degrees, as tf.image.rot90 does, but
    by slicing and transposing only: rot90's shape checks add conditionals that slow the traced graph."""
    quarters %= 4
    if quarters == 1:
        return tf.transpose(batch, [0, 2, 1, 3])[:, ::-1]
    if quarters == 2:
        return batch[:, ::-1, ::-1]
    if quarters == 3:
        return tf.transpose(batch, [0, 2, 1, 3])[:, :, ::-1]
    return batch


def _flip_left_right(batch):
    return batch[:, :, ::-1]


def _flip_up_down(batch):
    return batch[:, ::-1]


# named functions, not lambdas: AutoGraph cannot read the source of several lambdas on one line and warns
_VIEW_OPERATIONS = {"identity": partial(_turn, quarters=0), "rot90": partial(_turn, quarters=1),
                    "rot180": partial(_turn, quarters=2), "rot270": partial(_turn, quarters=3),
                    "flip_left_right": _flip_left_right, "flip_up_down": _flip_up_down}


def _features(features_model, images, tta: str):
    """Last-block features of every view, stacked along the batch: (views * b, h, w, k).

    The views go through the network as two calls: independent calls run side by side on the CPU's
    cores, so on 2 cores two views cost about 1.5 single passes instead of 2. Four views go as two
    pairs: as fast as four calls, and two traced networks instead of four shorten the start-up warm-up.
    """
    parts = views(images, tta)
    if len(parts) == 4:
        parts = [tf.concat(parts[:2], axis=0), tf.concat(parts[2:], axis=0)]
    return tf.concat([features_model(part, training=False) for part in parts], axis=0)


def _mean_of_views(values, tta: str, spatial: bool):
    """Average the views' results, undoing each view's turn or flip first for spatial maps."""
    if tta == "none":
        return values
    parts = tf.split(values, TTA_VIEWS[tta], axis=0)
    if spatial and tta == "half_turn":
        parts[1] = parts[1][:, ::-1, ::-1]
    elif spatial and tta == "quarter_turns":
        parts = [parts[0]] + [_turn(part, 4 - k) for k, part in zip((1, 2, 3), parts[1:])]
    elif spatial:
        parts = [parts[0], parts[1][:, :, ::-1], parts[2][:, ::-1], parts[3][:, ::-1, ::-1]]
    return tf.add_n(parts) / float(len(parts))


def make_forward(model: keras.Model, temperature: float = 1.0, logit_bias=None, tta: str = "none"):
    """Two traced functions over uint8-valued float batches: (logits, pooled) and (probs, logits, cams,
    pooled), where pooled are the features the dense head reads (for skin_core.familiarity).

    The probabilities are calibrated: softmax((logits + logit_bias) / temperature). With test-time
    views (see TTA_VIEWS; a dermoscopy photo has no preferred orientation), logits, maps and pooled
    features are the mean over the views, still in one traced call.
    """
    if tta not in TTA_VIEWS:
        raise ValueError(f"Unknown test-time augmentation {tta!r}; expected one of {', '.join(TTA_VIEWS)}.")
    size = model.input_shape[1]
    spec = [tf.TensorSpec((None, size, size, 3), tf.float32)]
    features_model = keras.Model(model.input, model.get_layer(LAST_CONV_LAYER).output)
    pool, dense = model.get_layer(POOL_LAYER), model.get_layer(LOGITS_LAYER)
    temp = tf.constant(float(temperature), tf.float32)
    bias = tf.constant(np.zeros(model.output_shape[-1]) if logit_bias is None else logit_bias, tf.float32)

    @tf.function(input_signature=spec)
    def logits_only(images):
        pooled = pool(_features(features_model, images, tta))
        return _mean_of_views(dense(pooled), tta, spatial=False), _mean_of_views(pooled, tta, spatial=False)

    @tf.function(input_signature=spec)
    def with_cams(images):
        features = _features(features_model, images, tta)
        pooled = pool(features)
        logits = dense(pooled)
        # Grad-CAM's channel weights are the spatial mean of d logit_c / d features. Behind global average
        # pooling and a dense layer that gradient is kernel[k, c] / (h * w) at every position, so the maps
        # are relu(features . kernel) up to a positive factor that the normalisation below removes: exact
        # Grad-CAM without a backward pass (tests/test_explain.py checks it against GradientTape).
        cams = tf.nn.relu(tf.einsum("bhwk,kc->bhwc", features, dense.kernel.value))
        logits, cams = _mean_of_views(logits, tta, spatial=False), _mean_of_views(cams, tta, spatial=True)
        peak = tf.reduce_max(cams, axis=[1, 2], keepdims=True)
        cams = tf.math.divide_no_nan(cams, peak)                    # each class map in [0, 1]
        return tf.nn.softmax((logits + bias) / temp), logits, cams, _mean_of_views(pooled, tta, spatial=False)

    return logits_only, with_cams


@lru_cache(maxsize=8)
def _colour_table(colormap: str) -> list[int]:
    """The colormap sampled at 256 levels as a Pillow palette, so colouring a map is one lookup."""
    return (colormaps[colormap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8).ravel().tolist()


def overlay(rgb: np.ndarray, cam: np.ndarray, opacity: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heat map (any resolution) over an RGB image of any size (Pillow does the pixel work)."""
    height, width = rgb.shape[:2]
    heat = Image.fromarray((np.clip(cam, 0, 1) * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    heat.putpalette(_colour_table(colormap))
    return np.asarray(Image.blend(Image.fromarray(rgb), heat.convert("RGB"), opacity))


def display_square(rgb: np.ndarray, max_side: int = 600) -> np.ndarray:
    """The part of a photo the model sees (its centre square), shrunk only when larger than max_side."""
    square = images.centre_square(rgb)
    if square.shape[0] <= max_side:
        return square
    return np.asarray(Image.fromarray(square).resize((max_side, max_side), Image.Resampling.BILINEAR))


def png_bytes(rgb: np.ndarray) -> bytes:
    """A lossless PNG at zlib's fastest level: a 600 px overlay then costs a few milliseconds instead of the
    default level's tens (bench/cli.py), for a file about a tenth larger."""
    import io
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
