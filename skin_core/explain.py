"""Grad-CAM for the bundle's MobileNet, computed in the same traced call as the prediction,
and the heat-map overlay a user sees.

Grad-CAM weights each channel of the last convolutional block by the mean gradient of a class
logit with respect to it. Between that block and the logits there is only pooling and a dense
layer, so the backward pass is tiny and we compute the maps of all classes at once: the page can
switch the explained class without another forward pass.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from matplotlib import colormaps
from PIL import Image

from . import images
from .model import LAST_CONV_LAYER, LOGITS_LAYER, POOL_LAYER

import keras


def _flip_views(images):
    """The picture and its three flips, stacked along the batch: (4b, h, w, c)."""
    return tf.concat([images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]], axis=0)


def _mean_of_views(values, spatial: bool):
    """Average the four views' results, undoing each flip first for spatial maps."""
    same, left_right, up_down, both = tf.split(values, 4, axis=0)
    if spatial:
        left_right, up_down, both = left_right[:, :, ::-1], up_down[:, ::-1], both[:, ::-1, ::-1]
    return (same + left_right + up_down + both) / 4.0


def make_forward(model: keras.Model, temperature: float = 1.0, logit_bias=None, flip_tta: bool = False):
    """Two traced functions over uint8-valued float batches: (logits) and (probs, logits, cams).

    The probabilities are calibrated: softmax((logits + logit_bias) / temperature). With flip_tta,
    logits and maps are the mean over the picture and its three flips (a dermoscopy photo has no
    preferred orientation), still in one traced call.
    """
    size = model.input_shape[1]
    spec = [tf.TensorSpec((None, size, size, 3), tf.float32)]
    features_model = keras.Model(model.input, model.get_layer(LAST_CONV_LAYER).output)
    pool, dense = model.get_layer(POOL_LAYER), model.get_layer(LOGITS_LAYER)
    temp = tf.constant(float(temperature), tf.float32)
    bias = tf.constant(np.zeros(model.output_shape[-1]) if logit_bias is None else logit_bias, tf.float32)

    @tf.function(input_signature=spec)
    def logits_only(images):
        if flip_tta:
            return _mean_of_views(dense(pool(features_model(_flip_views(images), training=False))), spatial=False)
        return dense(pool(features_model(images, training=False)))

    @tf.function(input_signature=spec)
    def with_cams(images):
        features = features_model(_flip_views(images) if flip_tta else images, training=False)
        with tf.GradientTape() as tape:
            tape.watch(features)
            logits = dense(pool(features))
        jacobian = tape.batch_jacobian(logits, features)           # (batch, classes, h, w, k)
        channel_weights = tf.reduce_mean(jacobian, axis=[2, 3])    # (batch, classes, k)
        cams = tf.nn.relu(tf.einsum("bhwk,bck->bhwc", features, channel_weights))
        if flip_tta:
            logits, cams = _mean_of_views(logits, spatial=False), _mean_of_views(cams, spatial=True)
        peak = tf.reduce_max(cams, axis=[1, 2], keepdims=True)
        cams = tf.math.divide_no_nan(cams, peak)                    # each class map in [0, 1]
        return tf.nn.softmax((logits + bias) / temp), logits, cams

    return logits_only, with_cams


def overlay(rgb: np.ndarray, cam: np.ndarray, opacity: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heat map (any resolution) over an RGB image of any size."""
    height, width = rgb.shape[:2]
    heat = Image.fromarray((np.clip(cam, 0, 1) * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    colours = colormaps[colormap](np.asarray(heat) / 255.0)[..., :3] * 255.0
    blended = (1 - opacity) * rgb.astype(np.float32) + opacity * colours
    return blended.clip(0, 255).astype(np.uint8)


def centre_square(rgb: np.ndarray, max_side: int = 448) -> np.ndarray:
    """The part of a photo the model sees (its centre square), at a size fit for display."""
    square = Image.fromarray(images.centre_square(rgb))
    if square.width > max_side:
        square = square.resize((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(square)


def png_bytes(rgb: np.ndarray) -> bytes:
    import io
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()
