"""Decoding untrusted bytes: every bad input gets a specific message; odd but valid ones work."""
import io

import numpy as np
import pytest
from PIL import Image

from skin_core import images
from conftest import SAMPLE


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def real_jpeg() -> bytes:
    return next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg")).read_bytes()


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"%PDF-1.4 not an image", "not an image file"),
    (b"<html><body>hi</body></html>", "not an image file"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "not an image file"),
    (real_jpeg()[:400], "header is damaged"),
    (real_jpeg()[:3000], "incomplete or corrupt"),
    (encode(Image.new("RGB", (7, 30)), "PNG"), "only 7x30"),
    (encode(Image.new("RGB", (1, 1)), "PNG"), "only 1x1"),
])
def test_bad_inputs_are_refused_with_a_reason(data, message):
    with pytest.raises(images.ImageError, match=message):
        images.decode(data)


def test_pixel_and_byte_limits_are_checked_before_decoding():
    bomb = encode(Image.new("1", (12000, 12000)), "PNG")     # ~20 kB on disk, 144 megapixels
    assert len(bomb) < 100_000
    with pytest.raises(images.ImageError, match="megapixels"):
        images.decode(bomb)
    with pytest.raises(images.ImageError, match="The file is 1.9 MB; the limit is 1 MB"):
        images.decode(b"\xff" * 2_000_000, max_bytes=images.MB)
    with pytest.raises(images.ImageError, match="the limit is 25 MB"):
        images.decode(b"\xff" * (images.MAX_BYTES + 1))


@pytest.mark.parametrize("image, fmt", [
    (Image.new("L", (64, 48), 120), "PNG"),
    (Image.new("P", (64, 48)), "GIF"),
    (Image.new("CMYK", (64, 48), (0, 50, 100, 0)), "JPEG"),
    (Image.new("RGBA", (64, 48), (255, 0, 0, 0)), "PNG"),
    (Image.new("I;16", (64, 48), 40000), "PNG"),
    (Image.new("RGB", (64, 48), (10, 200, 30)), "WEBP"),
    (Image.new("RGB", (64, 48), (10, 200, 30)), "BMP"),
    (Image.new("RGB", (64, 48), (10, 200, 30)), "TIFF"),
])
def test_odd_modes_become_8_bit_rgb(image, fmt):
    decoded = images.decode(encode(image, fmt))
    assert decoded.rgb.shape == (48, 64, 3) and decoded.rgb.dtype == np.uint8


def test_transparency_is_flattened_onto_white():
    decoded = images.decode(encode(Image.new("RGBA", (40, 40), (255, 0, 0, 0)), "PNG"))
    assert (decoded.rgb == 255).all()


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (80, 40), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 40, 40))           # white on the left half
    exif = Image.Exif()
    exif[0x0112] = 6                                          # "rotate 90 degrees clockwise to view"
    decoded = images.decode(encode(image, "JPEG", exif=exif))
    assert decoded.size == (40, 80)
    assert decoded.rgb[:30].mean() > 200 and decoded.rgb[50:].mean() < 50   # white now on top
    assert any("EXIF" in note for note in decoded.notes)


def test_multi_frame_files_use_the_first_frame():
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    decoded = images.decode(buffer.getvalue())
    assert decoded.rgb[..., 0].mean() > 200
    assert any("2 frames" in note for note in decoded.notes)


def test_prepare_crops_the_centre_square_and_caps_detail():
    rgb = np.zeros((150, 200, 3), np.uint8)
    rgb[:, :25] = 255                                          # a white band outside the centre square
    prepared = images.prepare(rgb, 64)
    assert prepared.shape == (64, 64, 3) and prepared.max() == 0
    # pixel-level noise: capping detail at 150 px averages it away more than a plain resize to 224 does
    sharp = np.random.default_rng(0).integers(0, 256, (600, 600, 3)).astype(np.uint8)
    capped = images.prepare(sharp, 224, detail_side=150)
    uncapped = images.prepare(sharp, 224)
    assert capped.std() < 0.75 * uncapped.std(), (capped.std(), uncapped.std())   # measured 9.2 against 18.4
    # the detail it passes on, as the Diagnose page says it: the square, the cap, the input, whichever is least
    assert images.detail_seen(rgb, 64) == 64 and images.detail_seen(rgb, 224) == 150
    assert images.detail_seen(sharp, 224, detail_side=150) == 150 and images.detail_seen(sharp, 224) == 224
    assert images.detail_seen(rgb, 224, detail_side=160) == 150


def test_a_large_jpeg_is_decoded_reduced_to_what_the_model_and_page_use():
    photo = Image.open(next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))).resize((4032, 3024))
    rotated = Image.Exif()
    rotated[0x0112] = 6                                        # a phone photo taken upright
    decoded = images.decode(encode(photo, "JPEG", quality=92, exif=rotated))
    assert decoded.source_size == (4032, 3024)
    assert decoded.size == (756, 1008)                         # a quarter, turned upright: 600 px kept on the short side
    whole = np.asarray(photo.transpose(Image.Transpose.ROTATE_270))
    model_view = images.prepare(decoded.rgb, 224, detail_side=150)
    assert np.abs(model_view.astype(int) - images.prepare(whole, 224, detail_side=150)).mean() < 0.5   # ~0.1
    png = images.decode(encode(photo, "PNG"))                  # only JPEG's decoder can scale as it decodes
    assert png.size == png.source_size == (4032, 3024)


def test_photos_the_size_of_the_training_copies_decode_whole():
    for path in sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[:5]:
        decoded = images.decode(path.read_bytes())
        assert np.array_equal(decoded.rgb, np.asarray(Image.open(path).convert("RGB")))
    sharp = Image.fromarray(np.random.default_rng(1).integers(0, 256, (1199, 1600, 3)).astype(np.uint8))
    assert images.decode(encode(sharp, "JPEG", quality=95)).size == (1600, 1199)   # a half would leave 599
