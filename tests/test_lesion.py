"""Several photos of one lesion answered as one (skin_core.lesion): the mean of their logits, calibrated."""
from dataclasses import replace

import numpy as np
import pytest

from skin_core import images, lesion, quality, report
from skin_core.bundle import load_bundle
from skin_core.predict import Predictor
from conftest import SAMPLE

PATIENT = {"age": 55.0, "sex": "female", "localization": "back"}


def sample_photos(n):
    return sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[:n]


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    return Predictor(load_bundle(tiny_bundle))


def test_a_photos_logits_are_what_its_probabilities_are_calibrated_from(predictor, tiny_patient_bundle):
    photo = images.decode(sample_photos(1)[0].read_bytes())
    analysis = predictor.analyse(photo)
    np.testing.assert_allclose(predictor.calibrated(analysis.logits[None])[0], analysis.probabilities, atol=1e-6)
    reading = Predictor(load_bundle(tiny_patient_bundle))
    for patient in (None, PATIENT):       # the patient push is in the logits, as in the probabilities
        analysis = reading.analyse(photo, patient)
        np.testing.assert_allclose(reading.calibrated(analysis.logits[None])[0], analysis.probabilities, atol=1e-6)


def test_the_combined_answer_is_the_calibrated_mean_of_the_photos_logits(predictor):
    """Checked against the batch path evaluation uses: the same pictures through Predictor.logits."""
    paths = sample_photos(3)
    decoded = [images.decode(path.read_bytes()) for path in paths]
    photos = [(path.name, predictor.analyse(photo)) for path, photo in zip(paths, decoded)]
    answer = lesion.combine(predictor, photos)
    pixels = np.stack([predictor.prepare(photo.rgb) for photo in decoded])
    expected = predictor.calibrated(predictor.logits(pixels).mean(axis=0, keepdims=True))[0]
    np.testing.assert_allclose(answer.probabilities, expected, atol=1e-5)
    assert answer.photos == [path.name for path in paths] and answer.probabilities.sum() == pytest.approx(1)
    assert answer.ranked()[0][1] == answer.probabilities.max()
    # two confident photos that disagree: the mean of their logits, not of their probabilities (the tiny model's
    # own answers are too flat to tell the two apart)
    first, second = (replace(analysis, logits=np.eye(7)[k] * 6.0) for (_, analysis), k in zip(photos, (4, 5)))
    split = lesion.combine(predictor, [("a", first), ("b", second)]).probabilities
    np.testing.assert_allclose(split, predictor.calibrated(np.array([[0, 0, 0, 0, 3.0, 3.0, 0]]))[0], atol=1e-6)
    assert not np.allclose(split, predictor.calibrated(np.stack([first.logits, second.logits])).mean(axis=0),
                           atol=1e-3)
    twice = lesion.combine(predictor, [photos[0], ("again", photos[0][1])])
    np.testing.assert_allclose(twice.probabilities, photos[0][1].probabilities, atol=1e-6)


def test_a_combined_answer_needs_two_photos_answered_alike(predictor, tiny_patient_bundle):
    photo = images.decode(sample_photos(1)[0].read_bytes())
    with pytest.raises(ValueError, match="at least 2 photos"):
        lesion.combine(predictor, [("one", predictor.analyse(photo))])
    reading = Predictor(load_bundle(tiny_patient_bundle))
    with pytest.raises(ValueError, match="different patient details"):
        lesion.combine(reading, [("a", reading.analyse(photo, PATIENT)), ("b", reading.analyse(photo))])


def test_the_combined_findings_name_the_photos_flagged_on_their_own(predictor):
    paths = sample_photos(2)
    photos = [(path.name, predictor.analyse(images.decode(path.read_bytes()))) for path in paths]
    answer = lesion.combine(predictor, photos)
    thresholds = predictor.bundle.thresholds
    blurred = [quality.Finding("blur", "out of focus")]
    found = lesion.findings(answer, photos, thresholds, [[], blurred])
    own = quality.prediction_findings(answer.classes, answer.probabilities, thresholds)
    assert [f.code for f in found[:len(own)]] == [f.code for f in own]
    notes = [f for f in found if f.code == "photos"]
    assert len(notes) == 1 and f"'{paths[1].name}' looks unlike" in notes[0].message
    assert paths[0].name not in notes[0].message
    assert not [f for f in lesion.findings(answer, photos, thresholds, [[], []]) if f.code == "photos"]
    # its record says what was combined and how, in one photo's terms
    record = report.combined_report(answer, None, predictor.bundle, found)
    assert record["images"] == [p.name for p in paths] and record["top"] == answer.ranked()[0][0]
    assert record["probabilities"] == pytest.approx(answer.as_dict()) and "mean of the photos' logits" in \
        record["combined_as"]
