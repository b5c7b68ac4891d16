"""The Grad-CAM heat map as a user sees it: coloured, blended over the part of the photo the model saw, and
saved as a PNG. The maps themselves come from the served forward pass (skin_core.predict.make_forward), in the
same traced call as the prediction.
"""
from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from matplotlib import colormaps
from PIL import Image

from . import images


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
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
