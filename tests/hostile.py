"""A corpus of hostile and awkward uploads, generated on the fly: (file name, bytes, expected outcome)."""
import io
import zipfile

import numpy as np
from PIL import Image

from conftest import SAMPLE


def _save(image, fmt, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _photo() -> Image.Image:
    return Image.open(next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))).convert("RGB")


def corpus() -> list[tuple[str, bytes, str]]:
    photo = _photo()
    jpeg = _save(photo, "JPEG", quality=90)
    rotated = photo.rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 8                       # stored sideways: viewers rotate it upright
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated, tiff_pages = io.BytesIO(), io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], loop=0)
    frames[0].save(tiff_pages, format="TIFF", save_all=True, append_images=frames[1:])
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.txt", "hello")
    deep = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    refused = [
        ("empty.jpg", b""),
        ("truncated.jpg", jpeg[: len(jpeg) // 2]),
        ("header_only.jpg", jpeg[:300]),
        ("notes.txt.jpg", b"Patient notes: not an image at all\n" * 20),
        ("report.pdf.jpg", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF"),
        ("page.html", b"<!doctype html><html><script>alert(1)</script></html>"),
        ("vector.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9000" height="9000"><rect/></svg>'),
        ("bomb.png", _save(Image.new("1", (30000, 30000)), "PNG")),
        ("huge_upload.jpg", b"\xff\xd8\xff\xe0" + bytes(26 * 1024 * 1024)),
        ("one_pixel.png", _save(Image.new("RGB", (1, 1), (200, 100, 90)), "PNG")),
        ("seven_pixels_wide.png", _save(Image.new("RGB", (7, 300), (200, 100, 90)), "PNG")),
        ("random.bin.jpg", np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()),
        ("archive.zip.png", archive.getvalue()),
        ("elf.jpg", b"\x7fELF\x02\x01\x01" + bytes(200)),
        ("json.png", b'{"image": "no"}'),
        ("gif_header_only.gif", b"GIF89a\x10\x00\x10\x00"),
        ("png_header_only.png", _save(photo, "PNG")[:60]),
        ("bmp_truncated.bmp", _save(photo, "BMP")[:2000]),
        ("tiff_garbage.tif", b"II*\x00" + bytes(100)),
    ]
    accepted = [
        ("plain.jpg", jpeg),
        ("ten_pixels.png", _save(Image.new("RGB", (10, 10), (200, 100, 90)), "PNG")),      # a thumbnail: enlarged,
        ("thin_strip.png", _save(Image.new("RGB", (4000, 20), (200, 100, 90)), "PNG")),   # with the small-photo warning
        ("deep_16bit.png", _save(Image.fromarray(deep), "PNG")),
        ("greyscale.png", _save(photo.convert("L"), "PNG")),
        ("palette.png", _save(photo.convert("P"), "PNG")),
        ("cmyk.jpg", _save(photo.convert("CMYK"), "JPEG")),
        ("transparent.png", _save(rgba, "PNG")),
        ("animated.gif", animated.getvalue()),
        ("pages.tiff", tiff_pages.getvalue()),
        ("exif_rotated.jpg", _save(rotated, "JPEG", exif=exif)),
        ("photo.webp", _save(photo, "WEBP")),
        ("photo.bmp", _save(photo, "BMP")),
        ("progressive.jpg", _save(photo, "JPEG", progressive=True)),
        ("grey_alpha.png", _save(photo.convert("LA"), "PNG")),
        ("float.tiff", _save(Image.fromarray(np.asarray(photo.convert("L"), np.float32) / 255), "TIFF")),
        ("../../etc/passwd.jpg", jpeg),
        ("tab\tand\x07bell.jpg", jpeg),
    ]
    return [(n, d, "refused") for n, d in refused] + [(n, d, "accepted") for n, d in accepted]
