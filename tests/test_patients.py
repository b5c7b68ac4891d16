"""Age, sex and body site: their encoding, the head trained with the network, and every place that serves it
(the predictor, finishing, the command line, the validation comparison and the Diagnose page)."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
import tensorflow as tf

from conftest import SAMPLE, make_folder_dataset
from skin_core import bundle as bundles, images, patients
from skin_core.pipelines import hide_all_of_some, hide_some
from skin_core.predict import Predictor


def one_hot_names(row: np.ndarray) -> list[str]:
    return [patients.FEATURES[i] for i in np.flatnonzero(row)]


def test_each_field_lands_in_its_column_and_anything_blank_or_foreign_is_unknown():
    rows = pd.DataFrame({"age": [29, 30, 85.0, None, "n/a"],
                         "sex": ["female", "male", None, "unknown", "other"],
                         "localization": ["face", "lower extremity", "unknown", None, "moon"]})
    encoded = patients.encode(rows)
    assert encoded.shape == (5, len(patients.FEATURES)) and encoded.sum(axis=1).tolist() == [3] * 5
    assert one_hot_names(encoded[0]) == ["age=0-29", "sex=female", "site=face"]
    assert one_hot_names(encoded[1]) == ["age=30-39", "sex=male", "site=lower extremity"]
    assert one_hot_names(encoded[2]) == ["age=80+", "sex=unknown", "site=unknown"]
    assert one_hot_names(encoded[3]) == one_hot_names(encoded[4]) == ["age=unknown", "sex=unknown", "site=unknown"]
    np.testing.assert_array_equal(patients.unknown(2), encoded[[3, 4]])


def test_the_isic_archives_words_are_read_as_the_training_photos_were_mapped():
    isic = pd.DataFrame({"age": [55, 70], "sex": ["F", " Male"],
                         "localization": ["posterior torso", "Anterior Torso"]})
    ham = pd.DataFrame({"age": [55, 70], "sex": ["female", "male"], "localization": ["back", "trunk"]})
    np.testing.assert_array_equal(patients.encode(isic), patients.encode(ham))
    for isic_site, ham_site in [("lateral torso", "trunk"), ("palms/soles", "acral"), ("oral/genital", "genital")]:
        assert patients.check(None, "f", isic_site) == {"age": None, "sex": "female", "localization": ham_site}
    head_neck = patients.encode(pd.DataFrame({"localization": ["head/neck"]}))     # face, scalp, neck or ear
    assert one_hot_names(head_neck[0])[-1] == "site=unknown"


def test_values_read_as_unknown_although_given_are_counted_per_field():
    rows = pd.DataFrame({"age": [45, "n/a", None, 150, "unknown"],
                         "sex": ["female", "F", "woman", None, "unknown"],
                         "localization": ["back", "head/neck", "", "unknown", "left cheek"]})
    assert patients.unrecognised(rows) == {"age": {"n/a": 1, "150": 1}, "sex": {"woman": 1},
                                           "localization": {"head/neck": 1, "left cheek": 1}}
    assert patients.unrecognised(rows.iloc[[0]]) == {}


def test_evaluating_another_dataset_says_which_details_the_model_could_not_read(tiny_patient_bundle, tmp_path,
                                                                               sample_meta, capsys):
    from skin_core.__main__ import main
    from skin_core.data import load_dataset, read_images
    data = tmp_path / "other_clinic"
    shutil.copytree(SAMPLE / "HAM10000_images_part_1", data / "HAM10000_images_part_1")
    split = pd.read_csv(tiny_patient_bundle / "split.csv", dtype=str)
    meta = pd.read_csv(SAMPLE / "HAM10000_metadata.csv", dtype=str)
    meta = meta[meta["image_id"].isin(split.loc[split["subset"] == "test", "image_id"])].reset_index(drop=True)
    meta.loc[:2, "localization"] = "head/neck"          # ISIC's name, spanning four of HAM10000's
    meta.loc[0, "sex"] = "woman"
    meta.to_csv(data / "HAM10000_metadata.csv", index=False)
    assert main(["evaluate", "--model", str(tiny_patient_bundle), "--data", str(data),
                 "--json", str(tmp_path / "report.json")]) == 0
    out = capsys.readouterr().out
    details = json.loads((tmp_path / "report.json").read_text())["patient_details"]
    assert details["unrecognised"] == {"sex": {"woman": 1}, "localization": {"head/neck": 3}}
    assert details["known"]["localization"] == pytest.approx(meta["localization"].isin(patients.SITES).mean())
    assert "Values outside HAM10000's were read as unknown (images in brackets): sex 'woman' (1); " \
           "body site 'head/neck' (3)." in out
    alone = json.loads((tmp_path / "report.json").read_text())["photo_only"]      # and what the photos alone score
    predictor = Predictor.from_path(tiny_patient_bundle)
    table = load_dataset(data, every_class=False).table
    probs = predictor.probabilities(read_images(table, predictor.input_size, predictor.detail_side).pixels)
    labels = table["dx"].map({c: i for i, c in enumerate(predictor.classes)}).to_numpy()
    assert alone["accuracy"] == pytest.approx(float((probs.argmax(1) == labels).mean()))
    assert f"given the photos alone (no age, sex or body site): balanced accuracy {alone['balanced_accuracy']:.3f}" in out

    folders = make_folder_dataset(tmp_path / "folders", sample_meta[sample_meta["image_id"].isin(meta["image_id"])])
    assert main(["evaluate", "--model", str(tiny_patient_bundle), "--data", str(folders)]) == 0
    assert "The dataset records no age, sex or body site, so the model answered from the photos alone." in \
        capsys.readouterr().out


def test_details_typed_by_a_person_are_checked_with_a_message_naming_the_field():
    assert patients.check("42", "male", "back") == {"age": 42.0, "sex": "male", "localization": "back"}
    assert patients.check(None, "", "unknown") == {"age": None, "sex": None, "localization": None}
    for bad, field in (({"age": "forty"}, "Age"), ({"age": -1}, "Age"), ({"age": 130}, "Age"),
                       ({"sex": "x"}, "Sex"), ({"site": "elbow"}, "Body site")):
        with pytest.raises(patients.PatientError, match=field):
            patients.check(**bad)


def test_details_are_read_by_image_id_and_a_dataset_without_them_reads_as_unknown(tmp_path, sample_meta):
    meta = pd.read_csv(SAMPLE / "HAM10000_metadata.csv")
    ids = list(meta["image_id"][[5, 0, 3]]) + ["ISIC_not_listed"]
    rows = patients.read(SAMPLE, ids)
    assert list(rows["localization"][:3]) == list(meta.set_index("image_id").loc[ids[:3], "localization"])
    assert rows.iloc[3].isna().all()
    folders = make_folder_dataset(tmp_path / "folders", sample_meta.head(3))
    assert patients.coverage(patients.read(folders, ids[:3])) == {"age": 0.0, "sex": 0.0, "localization": 0.0}


def test_hiding_sets_whole_fields_to_unknown_and_nothing_else():
    rows = patients.encode(pd.DataFrame({"age": [45] * 400, "sex": ["female"] * 400, "localization": ["back"] * 400}))
    assert np.array_equal(hide_some(tf.constant(rows), 1, 0.0).numpy(), rows)
    assert np.array_equal(hide_some(tf.constant(rows), 1, 0.9999).numpy(), patients.unknown(400))
    half = hide_some(tf.constant(rows), 1, 0.5).numpy()
    for field, (start, stop) in patients.GROUPS.items():
        assert (half[:, start:stop].sum(axis=1) == 1).all()           # still one value per field
        hidden = half[:, stop - 1].mean()
        assert 0.4 < hidden < 0.6, field                                # each field hidden on its own draw
    sex, site = patients.GROUPS["sex"], patients.GROUPS["localization"]
    assert not np.array_equal(half[:, sex[1] - 1], half[:, site[1] - 1])


def test_hiding_every_detail_of_some_photos_leaves_the_others_untouched():
    rows = patients.encode(pd.DataFrame({"age": [45] * 400, "sex": ["female"] * 400, "localization": ["back"] * 400}))
    assert np.array_equal(hide_all_of_some(tf.constant(rows), 1, 0.0).numpy(), rows)
    some = hide_all_of_some(tf.constant(rows), 1, 0.3).numpy()
    all_hidden = (some == patients.unknown(1)).all(axis=1)
    untouched = (some == rows).all(axis=1)
    assert (all_hidden | untouched).all() and 0.2 < all_hidden.mean() < 0.4


def test_a_patient_run_writes_its_head_in_the_bundle_and_the_predictor_adds_its_push(tiny_patient_bundle):
    bundle = bundles.load_bundle(tiny_patient_bundle)
    manifest = bundle.manifest
    assert patients.PATIENT_FILE in manifest["files"] and manifest["training"]["patients"] is True
    head = bundle.patient_head
    assert head.weights.shape == (len(patients.FEATURES), 7) and np.abs(head.weights).max() > 0.01   # it learnt
    assert set(manifest["patients"]["validation_photo_only"]) >= {"balanced_accuracy", "macro_f1", "ece"}
    assert manifest["patients"]["known_in_training"]["localization"] > 0.9
    assert [layer.name for layer in bundle.model.layers][-2:] == ["logits", "probabilities"]   # the photo model

    predictor = Predictor(bundle)
    decoded = images.load_file(next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg")))
    pixels = predictor.prepare(decoded.rgb)[None]
    photo_logits, _ = predictor.photo_logits_and_features(pixels)
    old_face = patients.check(80, "male", "face")
    alone, with_details = predictor.analyse(decoded), predictor.analyse(decoded, old_face)
    # exactly the calibrated softmax of the photo's logits plus the head's push ("unknown" when nothing is given)
    np.testing.assert_allclose(with_details.probabilities, softmax(predictor.calibrated_logits(
        photo_logits + patients.encode(pd.DataFrame([old_face])) @ head.weights), axis=-1)[0], atol=1e-5)
    np.testing.assert_allclose(alone.probabilities, softmax(predictor.calibrated_logits(
        photo_logits + patients.unknown(1) @ head.weights), axis=-1)[0], atol=1e-5)
    assert np.abs(with_details.probabilities - alone.probabilities).max() > 1e-3
    np.testing.assert_array_equal(with_details.cams, alone.cams)      # the maps explain the photo
    assert with_details.patient == old_face and alone.patient is None


def test_finishing_scores_the_test_split_with_each_patients_details(tiny_patient_bundle):
    predictor = Predictor.from_path(tiny_patient_bundle)
    stored = json.loads((tiny_patient_bundle / bundles.EVALUATION_FILE).read_text())
    again = predictor.evaluate(SAMPLE)        # the held-out test images, details from the metadata file
    assert again["predictions"]["image_id"] == stored["predictions"]["image_id"]
    assert again["balanced_accuracy"] == pytest.approx(stored["balanced_accuracy"])
    np.testing.assert_allclose(np.array(again["predictions"]["probs"]),
                               np.array(stored["predictions"]["probs"]), atol=1e-4)
    # and what the photos alone score there (photos sent from elsewhere mostly come without the details)
    from skin_core import data, splits
    split = pd.read_csv(tiny_patient_bundle / "split.csv", dtype=str)
    test = splits.load_under_split(SAMPLE, tiny_patient_bundle / "split.csv")
    test = test[test["subset"] == "test"].reset_index(drop=True)
    assert sorted(test["image_id"]) == sorted(split.loc[split["subset"] == "test", "image_id"])
    alone = predictor.probabilities(data.read_images(test, predictor.input_size, predictor.detail_side).pixels)
    labels = test["dx"].map({c: i for i, c in enumerate(predictor.classes)}).to_numpy()
    from sklearn.metrics import balanced_accuracy_score
    assert stored["photo_only"]["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, alone.argmax(1)))
    manifest = json.loads((tiny_patient_bundle / "manifest.json").read_text())
    assert manifest["test"]["photo_only"] == stored["photo_only"]


def test_a_changed_head_file_is_refused(tiny_patient_bundle, tmp_path):
    copy = shutil.copytree(tiny_patient_bundle, tmp_path / "copy")
    stored = json.loads((copy / patients.PATIENT_FILE).read_text())
    stored["weights"][0][0] += 1.0
    (copy / patients.PATIENT_FILE).write_text(json.dumps(stored))
    with pytest.raises(bundles.BundleError, match="patients.json does not match its manifest checksum"):
        bundles.load_bundle(copy)


def test_a_patient_run_is_refused_on_data_without_details_or_with_label_mixing(tmp_path, sample_meta):
    from skin_core.training import TrainConfig, train
    folders = make_folder_dataset(tmp_path / "folders", sample_meta)
    tiny = dict(epochs=1, head_epochs=1, img_size=32, alpha=0.25, weights=None, batch_size=8, workers=2,
                patients=True)
    with pytest.raises(ValueError, match="records no age, sex or body site"):
        train(TrainConfig(data=str(folders), out=str(tmp_path / "a"), **tiny))
    with pytest.raises(ValueError, match="--mix none"):
        train(TrainConfig(data=str(SAMPLE), out=str(tmp_path / "b"), mix="mixup", **tiny))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_predict_on_the_command_line_takes_the_details_and_names_a_bad_one(tiny_patient_bundle, tiny_bundle, capsys):
    from skin_core.__main__ import main
    photo = next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))
    assert main(["predict", "--model", str(tiny_patient_bundle), str(photo), "--age", "70", "--sex", "female",
                 "--site", "face"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["patient"] == {"age": 70.0, "sex": "female", "localization": "face"}
    assert record["model_reads_patient"] is True
    assert main(["predict", "--model", str(tiny_patient_bundle), str(photo), "--age", "old"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: Age must be a number of years, got 'old'." and not captured.out
    assert main(["predict", "--model", str(tiny_bundle), str(photo), "--site", "back"]) == 0
    captured = capsys.readouterr()
    assert "reads the photo alone" in captured.err and json.loads(captured.out)["patient"] is None


def test_the_validation_comparison_gives_a_patient_model_its_details_unless_told_not_to(tiny_patient_bundle):
    from compare_on_validation import compare
    manifest = json.loads((tiny_patient_bundle / "manifest.json").read_text())
    (with_details,) = compare([str(tiny_patient_bundle)], SAMPLE, rounds=10)
    (photo_only,) = compare([str(tiny_patient_bundle)], SAMPLE, rounds=10, with_patients=False)
    # the first reproduces finishing, which used the details; the second is the same model given none
    assert with_details["balanced_accuracy"] == pytest.approx(manifest["validation"]["balanced_accuracy"])
    assert with_details["prior_shift"] == manifest["calibration"]["prior_shift"]
    assert photo_only["n"] == with_details["n"]
    with pytest.raises(bundles.BundleError, match="cannot be averaged"):
        compare([f"{tiny_patient_bundle}+{tiny_patient_bundle}"], SAMPLE, rounds=10)


def test_the_diagnose_page_asks_for_the_details_and_says_what_the_answer_used(tiny_patient_bundle, tmp_path,
                                                                              monkeypatch):
    from test_app import page, real_image
    root = tmp_path / "models"
    shutil.copytree(tiny_patient_bundle, root / "default")
    monkeypatch.setenv("SKIN_MODELS_DIR", str(root))
    at = page("diagnose").run()
    assert not at.exception
    assert [box.label for box in at.selectbox] == ["Sex", "Body site"] and at.number_input[0].value is None
    at.file_uploader[0].set_value(("lesion.jpg", real_image(), "image/jpeg")).run()
    assert any(str(c.value) == "Answered from the photo alone (no patient details entered above)." for c in at.caption)
    chart_alone = at.get("plotly_chart")[0].proto.spec
    at.number_input[0].set_value(80).run()
    at.selectbox[1].set_value("face").run()
    assert not at.exception
    assert any(str(c.value) == "Answered from the photo and age 80, face." for c in at.caption)
    assert at.get("plotly_chart")[0].proto.spec != chart_alone          # the probabilities moved


def test_an_export_carries_the_patient_push_and_its_recipe_gives_what_the_app_shows(tiny_patient_bundle, tmp_path):
    from skin_core import data, export
    bundle = bundles.load_bundle(tiny_patient_bundle)
    table = data.load_dataset(SAMPLE).table.head(12)
    pixels = data.read_images(table, bundle.input_size, bundle.detail_side).pixels
    rows = patients.read(SAMPLE, table["image_id"])
    path = export.export_bundle(tiny_patient_bundle, "tflite", tmp_path / "model.tflite")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["patient_push"]["features"] == patients.FEATURES and "patient_push" in sidecar["output"]
    runner, predictor = export.TFLiteRunner(path), Predictor(bundle)
    for given in (rows, None):
        np.testing.assert_allclose(export.calibrated_probabilities(runner, pixels.astype(np.float32), sidecar, given),
                                   predictor.probabilities(pixels, patients=given), atol=1e-4)


def test_the_model_card_says_what_the_head_reads_and_how_the_model_does_without_it(tiny_patient_bundle, tiny_bundle):
    from model_card import card
    text = card(tiny_patient_bundle, "python train.py ... --patients", "(none)")
    manifest = json.loads((tiny_patient_bundle / "manifest.json").read_text())
    alone, given = manifest["test"]["photo_only"], manifest["test"]
    assert "reads the patient's age (in bands), sex and body site" in text and "tied to the clinic" in text
    assert (f"given none, the same model scores on the held-out test split, balanced accuracy "
            f"{alone['balanced_accuracy']:.3f} and macro F1 {alone['macro_f1']:.3f} (with the details: "
            f"{given['balanced_accuracy']:.3f} and {given['macro_f1']:.3f})") in text
    photo_only_card = card(tiny_bundle, "python train.py ...", "(none)")
    assert "sex and body site" not in photo_only_card and "tied to the clinic" not in photo_only_card


def test_the_evaluation_page_says_its_figures_used_the_details_and_what_the_photo_alone_scores(
        tiny_patient_bundle, tiny_bundle, tmp_path, monkeypatch):
    from test_app import page
    root = tmp_path / "models"
    shutil.copytree(tiny_patient_bundle, root / "default")
    shutil.copytree(tiny_bundle, root / "photo_only")
    monkeypatch.setenv("SKIN_MODELS_DIR", str(root))
    at = page("evaluation").run()
    assert not at.exception
    alone = json.loads((root / "default" / "manifest.json").read_text())["test"]["photo_only"]
    notes = [str(i.value) for i in at.info if "reads the patient's age" in str(i.value)]
    assert len(notes) == 1 and ("Given the photo alone it scores on the held-out test split, balanced accuracy "
                                f"{alone['balanced_accuracy']:.3f}") in notes[0]


def test_a_retrain_run_learning_from_the_details_needs_them_in_the_dataset_and_no_label_mixing(tiny_bundle, tmp_path,
                                                                                               sample_meta):
    from skin_core import data, launch
    form = {"data": str(SAMPLE), "epochs": 3, "img_size": 32, "alpha": 0.25, "seed": 42, "patients": True}
    config, _ = launch.plan_run(form, data.load_dataset(SAMPLE).table, start_from="imagenet", same_lesions=False,
                                active=tiny_bundle)
    assert config["patients"] is True
    with pytest.raises(launch.LaunchError, match="Label mixing"):
        launch.plan_run({**form, "mix": "cutmix"}, data.load_dataset(SAMPLE).table, start_from="imagenet",
                        same_lesions=False, active=tiny_bundle)
    folders = make_folder_dataset(tmp_path / "folders", sample_meta)
    with pytest.raises(launch.LaunchError, match="records no age, sex or body site"):
        launch.plan_run({**form, "data": str(folders)}, data.load_dataset(folders).table, start_from="imagenet",
                        same_lesions=False, active=tiny_bundle)


def test_a_run_started_from_a_patient_bundle_starts_from_its_head_too(tiny_patient_bundle):
    from skin_core.training import TrainConfig, _initial_model
    import keras
    from skin_core.model import PATIENT_GAIN, PATIENT_LOGITS_LAYER, with_patient_head
    config = TrainConfig(data=str(SAMPLE), out="unused", img_size=32, alpha=0.25, init_bundle=str(tiny_patient_bundle))
    photo_model, head = _initial_model(config, 7)
    source = bundles.load_bundle(tiny_patient_bundle)
    np.testing.assert_array_equal(head.weights, source.patient_head.weights)
    for mine, theirs in zip(photo_model.get_weights(), source.model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    model = with_patient_head(photo_model, len(patients.FEATURES))
    model.get_layer(PATIENT_LOGITS_LAYER).set_weights([head.weights / PATIENT_GAIN])    # as fit() starts it
    rows = patients.read(SAMPLE, pd.read_csv(SAMPLE / "HAM10000_metadata.csv")["image_id"][:4])
    pixels = np.zeros((4, 32, 32, 3), np.float32)
    logits = keras.Model(model.inputs, model.get_layer("logits_with_patient").output)(
        {"image": pixels, "patient": patients.encode(rows)}).numpy()
    # the fitted model's logits are the photo's plus the stored push: the gain is undone where it is stored
    np.testing.assert_allclose(logits, keras.Model(photo_model.inputs, photo_model.get_layer("logits").output)(
        pixels).numpy() + patients.encode(rows) @ head.weights, atol=1e-5)


def test_refinishing_a_patient_bundle_keeps_its_head_and_its_validation_figures(tiny_patient_bundle, tmp_path,
                                                                                monkeypatch):
    import refinish
    from conftest import run_script
    out = tmp_path / "again"
    run_script(refinish, monkeypatch, tiny_patient_bundle, "--out", out, "--data", SAMPLE)
    again, source = bundles.load_bundle(out), bundles.load_bundle(tiny_patient_bundle)
    np.testing.assert_allclose(again.patient_head.weights, source.patient_head.weights, atol=1e-6)
    assert again.manifest["validation"]["balanced_accuracy"] == pytest.approx(
        source.manifest["validation"]["balanced_accuracy"])
    # the same figures, up to float32 rounding of the probabilities (their calibration error differed by 1e-7)
    assert again.manifest["patients"]["validation_photo_only"] == pytest.approx(
        source.manifest["patients"]["validation_photo_only"], abs=1e-5)
    with pytest.raises(SystemExit, match="cannot be averaged"):
        run_script(refinish, monkeypatch, tiny_patient_bundle, "--average-with", tiny_patient_bundle,
                   "--out", tmp_path / "soup", "--data", SAMPLE)
