"""The 'unlike dermoscopy' checks and the prediction flags, on real and constructed pictures."""
import numpy as np
from PIL import Image

from skin_core import quality
from skin_core.classes import CLASS_CODES
from conftest import SAMPLE


def codes(rgb):
    return {f.code for f in quality.image_findings(rgb)}


def test_real_dermoscopy_passes():
    photos = sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))
    flagged = [p.name for p in photos if codes(np.asarray(Image.open(p).convert("RGB")))]
    assert len(flagged) <= 2, flagged


def test_each_check_fires_on_its_case():
    rng = np.random.default_rng(0)
    skin = (np.array([200, 150, 130]) + rng.normal(0, 20, (300, 400, 3))).clip(0, 255).astype(np.uint8)
    assert codes(skin) == set()
    assert "uniform" in codes(np.full((300, 400, 3), 180, np.uint8))
    assert "greyscale" in codes(np.repeat(skin.mean(2, keepdims=True), 3, 2).astype(np.uint8))
    assert "small" in codes(skin[:60, :80])
    assert "aspect" in codes(np.concatenate([skin] * 3, axis=1))
    assert "exposure" in codes((skin * 0.1).astype(np.uint8))
    sky = skin[..., ::-1]                                    # blue-dominant: not skin
    assert "colour" in codes(sky)


def test_an_out_of_focus_photo_is_flagged_at_any_size():
    """The focus check judges the photo at the detail of the training copies: a real photo passes at its
    own size and enlarged, and a blurred copy of it is flagged at both sizes."""
    from PIL import ImageFilter
    photos = sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[:10]
    for path in photos:
        photo = Image.open(path).convert("RGB")
        blurred = photo.filter(ImageFilter.GaussianBlur(2))
        for size in (photo.size, (800, 600)):
            assert "blur" not in codes(np.asarray(photo.resize(size, Image.Resampling.LANCZOS))), path.name
            assert "blur" in codes(np.asarray(blurred.resize(size, Image.Resampling.LANCZOS))), path.name
        assert quality.sharpness(np.asarray(blurred)) < quality.sharpness(np.asarray(photo)) / 3


def test_prediction_flags():
    classes = list(CLASS_CODES)
    confident_nv = np.array([0.01, 0.01, 0.02, 0.01, 0.02, 0.92, 0.01])
    assert quality.prediction_findings(classes, confident_nv, {"mel": 0.3}) == []
    torn = np.array([0.05, 0.05, 0.40, 0.02, 0.38, 0.08, 0.02])
    found = {f.code for f in quality.prediction_findings(classes, torn, {"mel": 0.3})}
    assert found == {"uncertain", "melanoma"}
    malignant = np.array([0.30, 0.30, 0.05, 0.02, 0.05, 0.26, 0.02])
    assert "malignant" in {f.code for f in quality.prediction_findings(classes, malignant, {"mel": 0.3})}


def test_a_large_photo_is_judged_as_its_training_size_copy():
    """Large uploads are judged on a regular subsample of their pixels (quality.STATISTICS_PIXELS): enlarged
    4x and 8x, real photos and their dark and blue-tinted versions get the findings their 200x150 copies get."""
    photos = sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[:10]
    for path in photos:
        photo = np.asarray(Image.open(path).convert("RGB"))
        for variant in (photo, (photo * 0.1).astype(np.uint8), photo[..., ::-1]):
            for scale in (4, 8):
                large = np.asarray(Image.fromarray(variant).resize((200 * scale, 150 * scale), Image.Resampling.BILINEAR))
                assert large.shape[0] * large.shape[1] > 5 * quality.STATISTICS_PIXELS
                assert codes(large) - {"blur"} == codes(variant) - {"blur"}, (path.name, scale)
