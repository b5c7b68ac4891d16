"""Turning untrusted bytes into a safe RGB array, and the one preprocessing every path shares.

Everything that reads a picture (training, evaluation, prediction, the app) goes through
`decode` and `prepare`, so a model never sees an image prepared differently from the ones it
was trained on. Limits are explicit here rather than left to Pillow's warning-only defaults.

A large JPEG is decoded at a half, quarter or eighth of its size (libjpeg's own scaled decoding) as
long as its short side keeps DECODED_SIDE pixels: more than the model (a detail cap of 150 px or an
input of 224) and the page's 600 px view use, for a fraction of the time (a 12-megapixel phone photo:
bench/latency.py). Every path decodes this way, and no training photo here is large enough to be
reduced, so what a model learnt from and what it is shown stay prepared alike.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MB = 1024 * 1024                      # as Streamlit counts its upload limit (server.maxUploadSize = 25)
MAX_BYTES = 25 * MB                   # larger than any dermatoscope export we know of
MAX_PIXELS = 50_000_000               # ~7000x7000; anything bigger is refused before decoding
MIN_SIDE = 8                          # below this there is no picture at all; small thumbnails are upsampled
                                      # and answered, with the quality check's warning that detail is missing
DECODED_SIDE = 600                    # a JPEG's short side is decoded at no fewer pixels than this (or its own)
ALLOWED_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF", "MPO"}
UPLOAD_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "gif")


class ImageError(ValueError):
    """An image we refuse, with a message a user can act on."""


@dataclass
class DecodedImage:
    """An upright 8-bit RGB picture and what we had to do to get it."""
    rgb: np.ndarray                   # (height, width, 3) uint8
    source_format: str
    source_mode: str
    notes: list[str] = field(default_factory=list)
    source_size: tuple[int, int] | None = None    # (width, height) in the file, before a reduced decode

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def decode(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode untrusted bytes to an upright RGB array, or raise ImageError saying why not."""
    if not data:
        raise ImageError("The file is empty (0 bytes).")
    if len(data) > max_bytes:
        raise ImageError(f"The file is {len(data) / MB:.1f} MB; the limit is {max_bytes / MB:.0f} MB.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError("This is not an image file we can read (JPEG, PNG, BMP, TIFF, WebP or GIF expected).") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"The image declares too many pixels; the limit is {max_pixels / 1e6:.0f} megapixels.") from None
        except Exception as exc:  # Pillow raises a zoo of errors for malformed headers
            raise ImageError(f"The image header is damaged ({type(exc).__name__}).") from None
        if image.format not in ALLOWED_FORMATS:
            raise ImageError(f"{image.format} images are not accepted; use JPEG, PNG, BMP, TIFF, WebP or GIF.")
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"The image is {width}x{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels.")
        if min(width, height) < MIN_SIDE:
            raise ImageError(f"The image is only {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed.")
        notes = []
        if getattr(image, "n_frames", 1) > 1:
            notes.append(f"The file holds {image.n_frames} frames or pages; only the first was used.")
        try:
            image.seek(0)
            _reduced_decoding(image)
            image.load()
            upright = ImageOps.exif_transpose(image)
        except Exception as exc:
            raise ImageError(f"The image data is incomplete or corrupt ({_reason(exc)}).") from None
    if _orientation(image) not in (None, 1):
        notes.append("Rotated upright using the photo's EXIF orientation.")
    rgb = _to_rgb_array(upright, notes)
    return DecodedImage(rgb=rgb, source_format=image.format, source_mode=image.mode, notes=notes,
                        source_size=(width, height))


def _reduced_decoding(image: Image.Image) -> None:
    """Ask a JPEG's decoder for its smallest scale (1/2, 1/4, 1/8) that keeps DECODED_SIDE pixels on the short
    side; other formats, and JPEGs too small for any, are decoded whole."""
    if image.format not in ("JPEG", "MPO"):
        return
    width, height = image.size
    factor = DECODED_SIDE / min(width, height)
    if factor <= 0.5:
        image.draft(None, (int(np.ceil(width * factor)), int(np.ceil(height * factor))))


def _reason(exc: Exception) -> str:
    text = str(exc).strip().rstrip(".")
    return text[:120] if text else type(exc).__name__


def _orientation(image: Image.Image):
    try:
        return image.getexif().get(0x0112)
    except Exception:
        return None


def _to_rgb_array(image: Image.Image, notes: list[str]) -> np.ndarray:
    """Any Pillow mode to 8-bit RGB; transparency is flattened onto white, deep images rescaled."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low) * 255.0
        notes.append(f"High bit-depth ({mode}) image rescaled to 8 bits.")
        return np.repeat(scaled.round().astype(np.uint8)[..., None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("Transparent areas were filled with white.")
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def centre_square(rgb: np.ndarray) -> np.ndarray:
    """The largest centred square of a picture: the part the model sees."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return np.ascontiguousarray(rgb[top:top + side, left:left + side])


def detail_seen(rgb: np.ndarray, input_size: int, detail_side: int | None = None) -> int:
    """How many pixels across of the picture's own detail `prepare` passes on: its centre square's side, capped
    by `detail_side`, and by the input size when that is smaller still."""
    side = min(rgb.shape[:2])
    return min(side, detail_side or side, input_size)


def prepare(rgb: np.ndarray, input_size: int, detail_side: int | None = None) -> np.ndarray:
    """The model's view of a picture: centre square crop, optional detail cap, resize.

    `detail_side` caps the resolution of the square before the final resize: a model trained on
    150-pixel copies then sees sharper uploads at the same level of detail it learned from.
    Returns (input_size, input_size, 3) uint8; scaling to [-1, 1] happens inside the model.
    """
    square = Image.fromarray(centre_square(rgb))
    side = square.width
    if detail_side and side > detail_side:
        square = square.resize((detail_side, detail_side), Image.Resampling.BILINEAR)
    if square.size != (input_size, input_size):
        square = square.resize((input_size, input_size), Image.Resampling.BILINEAR)
    return np.asarray(square, dtype=np.uint8)


def jpeg_resaved(image: Image.Image, quality: int) -> Image.Image:
    """The picture after one more JPEG save at `quality` (1-95), as phone and web copies are."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def load_file(path) -> DecodedImage:
    """Decode an image file from disk with the same limits as an upload."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_BYTES + 1)
    return decode(data)
