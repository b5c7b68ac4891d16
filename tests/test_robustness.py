"""The robustness report: real sample photographs through the served model under altered conditions."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from skin_core import images, patients, robustness
from skin_core.bundle import load_bundle
from skin_core.predict import Predictor

from conftest import ROOT, SAMPLE, run_script

HALF_TURN = robustness.Condition("half turn", "rotated by 180 degrees",
                                 lambda image: image.transpose(Image.Transpose.ROTATE_180))


def test_report_agrees_with_evaluation_and_a_half_turn_changes_no_served_answer(default_bundle, sample_meta):
    predictor = Predictor.from_path(default_bundle)
    pictures = [images.load_file(path).rgb for path in sample_meta["path"]]
    y_true = sample_meta["dx"].map({c: i for i, c in enumerate(predictor.classes)}).to_numpy()
    conditions = (robustness.CONDITIONS[0], HALF_TURN, robustness.CONDITIONS[1])
    details = patients.read(SAMPLE, sample_meta["image_id"])    # as evaluate reads them (a photo-only model ignores them)
    as_stored, half_turn, sharper = robustness.report(predictor, pictures, y_true, conditions, patient_rows=details)

    evaluation = predictor.evaluate(SAMPLE, leave_out_seen=False)   # the same 70 pictures: a check of the code
    assert as_stored["accuracy"] == evaluation["accuracy"]
    assert as_stored["balanced_accuracy"] == evaluation["balanced_accuracy"]
    # the served model averages each photo with its half turn (or all four quarter turns), so turning the
    # photo by 180 degrees only reorders the views: no diagnosis may change
    assert half_turn["top_diagnosis_changed"] == 0.0
    assert half_turn["accuracy"] == as_stored["accuracy"]
    # the sharper crops' row, against the app's own path (one photo at a time, as an upload is analysed)
    def served(picture: np.ndarray, condition, patient: dict) -> np.ndarray:
        altered = np.asarray(condition.alter(Image.fromarray(picture)).convert("RGB"))
        return predictor.analyse(images.DecodedImage(altered, "PNG", "RGB"), patient).probabilities
    rows = details.to_dict("records")
    stored = np.array([served(p, robustness.CONDITIONS[0], row) for p, row in zip(pictures, rows)])
    sharpened = np.array([served(p, robustness.CONDITIONS[1], row) for p, row in zip(pictures, rows)])
    one_photo = 1.5 / len(pictures)         # a near-tie may fall the other way between batch and single calls
    assert sharper["top_diagnosis_changed"] == pytest.approx(
        (sharpened.argmax(axis=1) != stored.argmax(axis=1)).mean(), abs=one_photo)
    mel = predictor.classes.index("mel")
    assert sharper["mel_recall_at_threshold"] == pytest.approx(
        (sharpened[y_true == mel, mel] >= predictor.bundle.thresholds["mel"]).mean(), abs=1.5 / (y_true == mel).sum())
    assert sharper["accuracy"] == pytest.approx((sharpened.argmax(axis=1) == y_true).mean(), abs=one_photo)


def test_every_condition_keeps_the_picture_usable():
    rgb = images.load_file(SAMPLE / "HAM10000_images_part_1" / sorted(p.name for p in
                           (SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[0]).rgb
    for condition in robustness.CONDITIONS:
        prepared = robustness.prepared([rgb], condition, 64, 150)
        assert prepared.shape == (1, 64, 64, 3) and prepared.dtype == np.uint8, condition.name
    unchanged = robustness.prepared([rgb], robustness.CONDITIONS[0], 64, 150)
    assert np.array_equal(unchanged[0], images.prepare(rgb, 64, 150))


def test_script_writes_the_report_beside_a_bundle_that_still_loads(tiny_bundle, tmp_path, monkeypatch, capsys):
    import model_card
    import robustness as robustness_script   # scripts/robustness.py, not skin_core.robustness
    bundle = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle)
    run_script(robustness_script, monkeypatch, bundle, "--data", SAMPLE)
    report = json.loads((bundle / "robustness.json").read_text())
    assert report["subset"] == "test"
    assert [row["condition"] for row in report["conditions"]] == [c.name for c in robustness.CONDITIONS]
    assert all(row["n"] == report["conditions"][0]["n"] > 0 for row in report["conditions"])
    assert "| quarter turn" in capsys.readouterr().out
    load_bundle(bundle)   # the extra report does not break the bundle's checks

    run_script(model_card, monkeypatch, bundle, "--command", "python train.py ...",
               "--experiments", ROOT / "docs" / "experiments.md")
    text = (bundle / "MODEL_CARD.md").read_text()
    assert "## Robustness to photo differences (test split)" in text
    assert f"| framed tighter ({robustness.CONDITIONS[2].description}) | {report['conditions'][2]['accuracy']:.3f} |" in text

    # validation figures are for choosing between candidates: printed, never written over the described report
    written = (bundle / "robustness.json").read_bytes()
    run_script(robustness_script, monkeypatch, bundle, "--data", SAMPLE, "--subset", "val")
    assert "| quarter turn" in capsys.readouterr().out
    assert (bundle / "robustness.json").read_bytes() == written


def test_the_model_card_describes_the_augmentation_the_manifest_records():
    from model_card import augmentation
    plain = augmentation({"augment": True, "photometric": False, "mix": "none"})
    assert "brightness and contrast (10%)" in plain and "JPEG" not in plain and "saturation" not in plain
    camera = augmentation({"augment": True, "photometric": True, "compression": True, "mix": "mixup"})
    assert "brightness and contrast (20%)" in camera and "saturation" in camera and "JPEG" in camera
    assert camera.endswith("MixUp (alpha 0.2) on every batch")
    assert augmentation({"augment": False, "photometric": True}) == "none"


def test_the_model_card_says_when_early_stopping_started_watching():
    from model_card import patience_start
    assert patience_start({"patience": 8, "patience_from": 12}) == ", counted from epoch 13"
    assert patience_start({"patience": 8}) == "" and patience_start({"patience_from": 0}) == ""


def test_the_model_card_says_whether_the_test_time_views_were_chosen_or_named():
    from model_card import tta_origin
    assert tta_origin({"tta": "auto"}) == tta_origin({}) == "chosen on validation"   # older manifests: auto
    assert tta_origin({"tta": "quarter_turns"}) == "set by the command (`--tta quarter_turns`)"


def test_the_model_card_says_when_weights_are_served_at_another_size_than_they_were_trained_at():
    from model_card import input_text
    assert input_text({"input_size": 160, "training": {"img_size": 160}}) == "160x160 RGB input"
    assert input_text({"input_size": 176, "training": {"img_size": 176, "trained_img_size": 160}}) == (
        "176x176 RGB input (the weights were trained at 160x160)")


def test_the_model_card_says_what_the_fitting_ran_on():
    from model_card import fitted_on
    assert fitted_on({"machine": "NVIDIA H200", "backend": "torch"}) == "NVIDIA H200"
    assert fitted_on({"backend": "torch"}) == "a GPU"                   # older manifests record no machine
    assert fitted_on({"backend": "tensorflow"}) == fitted_on({}) == "a 2-core CPU"


def test_a_gpu_run_without_a_name_is_refused_before_anything_is_read(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")    # the script asks for torch; later jobs must not inherit it
    from train_gpu import parse_run
    assert parse_run("long:epochs=60,lr=6e-4")[1]["epochs"] == 60
    assert parse_run("baseline") == ("baseline", parse_run("baseline:")[1])     # a bare name: the defaults
    for nameless in ("epochs=60,lr=6e-4", ":epochs=60"):
        with pytest.raises(SystemExit, match="must be NAME:key=value"):
            parse_run(nameless)


def test_the_model_card_says_when_a_prior_shift_moves_the_top_class():
    from model_card import prior_shift_text
    assert "0.25 x log(training-split class prior)" in prior_shift_text({"calibration": {"prior_shift": 0.25}})
    from skin_core.manifest import completed
    unfitted = completed({}, "bundle")                # a manifest with no calibration, as read
    assert prior_shift_text({"calibration": {"prior_shift": 0.0}}) == prior_shift_text(unfitted) == ""
