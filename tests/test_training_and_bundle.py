"""A real tiny training run writes a bundle that loads, predicts, and refuses tampering."""
import json
import re
import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from skin_core import bundle as bundles
from skin_core import images
from skin_core.model import WeightsError, build_model
from skin_core.predict import Predictor
from conftest import SAMPLE, run_script


def test_training_writes_a_complete_bundle(tiny_bundle):
    names = {p.name for p in tiny_bundle.iterdir()}
    assert {"model.keras", "manifest.json", "history.csv", "evaluation.json", "split.csv"} <= names
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert manifest["input_size"] == 32 and manifest["alpha"] == 0.25
    assert manifest["dataset"]["n_images"] == 70 and len(manifest["dataset"]["fingerprint"]) == 64
    assert set(manifest["versions"]) >= {"tensorflow", "keras", "scikit-learn", "numpy"}
    assert 0 < manifest["thresholds"]["mel"] <= 1
    assert manifest["calibration"]["temperature"] > 0
    history = pd.read_csv(tiny_bundle / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert {"loss", "accuracy", "top2", "top3", "val_loss", "val_accuracy", "phase"} <= set(history.columns)
    split = pd.read_csv(tiny_bundle / "split.csv")
    assert (split.groupby("lesion_id")["subset"].nunique() == 1).all()
    report = json.loads((tiny_bundle / "evaluation.json").read_text())
    assert report["n"] == (split["subset"] == "test").sum()
    assert set(report["predictions"]["image_id"]) == set(split.loc[split["subset"] == "test", "image_id"])


def test_progress_file_is_machine_readable(tiny_bundle):
    events = [json.loads(line) for line in (tiny_bundle.parent / "tiny_progress.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all("val_loss" in e["metrics"] for e in epochs)
    assert any(e["event"] == "batch" and e["batches"] > 0 for e in events)


def test_bundle_loads_and_predicts_a_real_image(tiny_bundle):
    predictor = Predictor.from_path(tiny_bundle)
    analysis = predictor.analyse(images.load_file(next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))))
    assert analysis.probabilities.shape == (7,)
    assert analysis.probabilities.sum() == pytest.approx(1, abs=1e-5)
    assert analysis.model_input.shape == (32, 32, 3)


def copy_of(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def edit_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_a_manifest_without_its_optional_sections_is_served_with_their_neutral_values(tiny_bundle, tmp_path):
    """Readers index the manifest directly: skin_core.manifest fills what a bundle may lack, once, at read."""
    path = copy_of(tiny_bundle, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    for optional in ("name", "created", "calibration", "thresholds", "test_time_augmentation", "test", "patients"):
        manifest.pop(optional, None)
    manifest["preprocessing"].pop("detail_side")
    (path / "manifest.json").write_text(json.dumps(manifest))
    bundle = bundles.load_bundle(path)
    assert (bundle.name, bundle.temperature, bundle.test_time_augmentation, bundle.thresholds) == \
        ("copy", 1.0, "none", {})
    assert bundle.detail_side is None and not bundle.logit_bias.any()
    assert bundle.manifest["test"] is None and bundle.manifest["created"] is None
    analysis = Predictor(bundle).analyse(images.decode(next(SAMPLE.rglob("*.jpg")).read_bytes()))
    assert analysis.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def write_split(bundle, split):
    """Give a bundle copy another split.csv, its checksum recorded so that the bundle still loads."""
    split.to_csv(bundle / bundles.SPLIT_FILE, index=False)
    edit_manifest(bundle, files={**bundles.read_manifest(bundle)["files"],
                                 bundles.SPLIT_FILE: bundles.sha256_file(bundle / bundles.SPLIT_FILE)})


def test_changed_model_bytes_are_refused(tiny_bundle, tmp_path):
    path = copy_of(tiny_bundle, tmp_path)
    with open(path / "model.keras", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(bundles.BundleError, match="model.keras does not match its manifest checksum"):
        bundles.load_bundle(path)


def test_tampered_manifest_is_refused(tiny_bundle, tmp_path):
    path = copy_of(tiny_bundle, tmp_path)
    edit_manifest(path, classes=["akiec", "bcc", "bkl", "df", "mel", "nv"])
    with pytest.raises(bundles.BundleError, match="7 outputs but the manifest lists 6 classes"):
        bundles.load_bundle(path)
    edit_manifest(path, format_version=99)
    with pytest.raises(bundles.BundleError, match="unknown bundle format version 99"):
        bundles.load_bundle(path)
    path = copy_of(tiny_bundle, tmp_path / "views")
    edit_manifest(path, test_time_augmentation="mirror")
    with pytest.raises(bundles.BundleError, match="unknown test-time views 'mirror'"):
        bundles.read_manifest(path)
    edit_manifest(path, test_time_augmentation="none", files={"history.csv": "0" * 64})
    with pytest.raises(bundles.BundleError, match="does not list model.keras"):
        bundles.read_manifest(path)


def test_a_model_not_built_here_is_refused_before_it_is_served(tiny_bundle, tmp_path):
    path = copy_of(tiny_bundle, tmp_path)
    foreign = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(),
                                keras.layers.Dense(7, activation="softmax")])
    foreign.save(path / "model.keras")
    edit_manifest(path, files={**bundles.read_manifest(path)["files"],
                               "model.keras": bundles.sha256_file(path / "model.keras")})
    with pytest.raises(bundles.BundleError, match="no layer named conv_pw_13_relu, logits, pool"):
        bundles.load_bundle(path)


def test_missing_file_is_refused(tiny_bundle, tmp_path):
    path = copy_of(tiny_bundle, tmp_path)
    (path / "history.csv").unlink()
    with pytest.raises(bundles.BundleError, match="history.csv is missing"):
        bundles.load_bundle(path)
    with pytest.raises(bundles.BundleError, match="manifest.json is missing"):
        bundles.load_bundle(tmp_path)


def test_a_lambda_layer_is_refused_by_safe_mode(tiny_bundle, tmp_path):
    path = copy_of(tiny_bundle, tmp_path)
    model = keras.saving.load_model(path / "model.keras", compile=False)
    hacked = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Lambda(lambda x: x * 1.0), model])
    hacked.save(path / "model.keras")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["model.keras"] = bundles.sha256_file(path / "model.keras")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(bundles.BundleError, match="cannot be loaded safely"):
        bundles.load_bundle(path)


def test_weights_from_an_h5_file(tmp_path):
    source = keras.applications.MobileNet(input_shape=(64, 64, 3), alpha=0.25, include_top=False, weights=None)
    path = tmp_path / "mobilenet_2_5_no_top.h5"
    _save_legacy_h5(source, path)
    model = build_model(input_size=64, alpha=0.25, weights=str(path))
    np.testing.assert_allclose(model.get_layer("conv_pw_5").get_weights()[0],
                               source.get_layer("conv_pw_5").get_weights()[0])


def _save_legacy_h5(model, path):
    """Write weights in Keras's legacy HDF5 layout, the layout of the ImageNet weight files."""
    from keras.src.legacy.saving import legacy_h5_format
    import h5py
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


def test_missing_or_wrong_weights_give_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        build_model(input_size=64, alpha=0.25, weights=str(tmp_path / "nope.h5"))
    wrong = tmp_path / "wrong.h5"
    _save_legacy_h5(keras.applications.MobileNet(input_shape=(64, 64, 3), alpha=0.5, include_top=False,
                                                 weights=None), wrong)
    with pytest.raises(WeightsError):
        build_model(input_size=64, alpha=0.25, weights=str(wrong))


def test_starting_from_a_bundle_refuses_a_split_that_would_test_on_its_training_images(tiny_bundle):
    from skin_core.progress import ProgressLog
    from skin_core.training import TrainConfig, prepare
    same = TrainConfig(data=str(SAMPLE), out="unused", img_size=32, alpha=0.25, test_fraction=0.2, val_fraction=0.2,
                       init_bundle=str(tiny_bundle))
    prepared = prepare(same, ProgressLog(None))          # the starting bundle's own split: accepted
    assert prepared.parts["test"].sum() > 0
    reshuffled = TrainConfig(**{**same.__dict__, "seed": 7})
    with pytest.raises(ValueError, match=r"starting model was trained or tuned on \d+ images \(or other photos of their "
                                         r"lesions\) this run would hold out for testing"):
        prepare(reshuffled, ProgressLog(None))


def test_another_seed_trains_on_the_starting_bundles_own_split_with_split_from(tiny_bundle, tmp_path):
    """--split-from: a second seed varies the training randomness only, so two runs can be compared or
    averaged on the same validation and test lesions (the reshuffled seed alone is refused above)."""
    from skin_core.progress import ProgressLog
    from skin_core.training import TrainConfig, prepare, train
    out = tmp_path / "seed7"
    config = TrainConfig(data=str(SAMPLE), out=str(out), epochs=1, head_epochs=0, img_size=32, alpha=0.25,
                         weights=None, batch_size=8, test_fraction=0.2, val_fraction=0.2, workers=2, tta="none",
                         init_bundle=str(tiny_bundle), split_from=str(tiny_bundle), seed=7)
    train(config)
    source = pd.read_csv(tiny_bundle / bundles.SPLIT_FILE, dtype=str)
    written = pd.read_csv(out / bundles.SPLIT_FILE, dtype=str)
    assert written.set_index("image_id")["subset"].sort_index().equals(
        source.set_index("image_id")["subset"].sort_index())
    manifest_text = (out / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    assert manifest["seed"] == 7 and manifest["training"]["split_from"] == tiny_bundle.name
    # the bundle names the folders it came from, not where they were on the machine that trained it
    assert manifest["training"]["init_bundle"] == tiny_bundle.name and manifest["training"]["out"] == out.name
    assert manifest["training"]["data"] == SAMPLE.name
    assert str(tmp_path) not in manifest_text and str(tiny_bundle.parent) not in manifest_text
    # the split keeps its own description: made with seed 42 by the bundle it was taken from
    assert manifest["split"]["seed"] == 42 and manifest["split"]["taken_from"] == tiny_bundle.name
    assert manifest["split"]["sizes"]["test"] == int((source["subset"] == "test").sum())
    assert manifest["split"]["shares"]["test"] == round(manifest["split"]["sizes"]["test"] / len(source), 3)
    with pytest.raises(ValueError, match="must come from a bundle folder that holds split.csv"):
        prepare(TrainConfig(**{**config.__dict__, "split_from": str(tmp_path / "nowhere")}), ProgressLog(None))
    # and the new bundle can join the starting one in a weight soup, which checks dataset and split
    assert len(bundles.weight_soup([bundles.load_bundle(tiny_bundle), bundles.load_bundle(out)]).get_weights())


def test_weights_fitted_elsewhere_are_bundled_only_with_the_split_they_were_fitted_on(tiny_bundle, tmp_path):
    """train.py --finish-from: the digest of the GPU run's train/val images must match the re-split."""
    from skin_core import splits
    from skin_core.training import TrainConfig, finish_from_weights
    source = bundles.load_bundle(tiny_bundle)
    weights = tmp_path / "run.weights.h5"
    source.model.save_weights(weights)
    history = tmp_path / "run.history.csv"
    shutil.copy(tiny_bundle / "history.csv", history)
    split = pd.read_csv(tiny_bundle / "split.csv", dtype=str)
    config = TrainConfig(data=str(SAMPLE), out=str(tmp_path / "bundle"), img_size=32, alpha=0.25, test_fraction=0.2,
                         val_fraction=0.2, workers=2, tta="none")
    out = finish_from_weights(config, str(weights), str(history), {"split_digest": splits.split_digest(split)})
    rebuilt = Predictor.from_path(out)
    assert rebuilt.bundle.manifest["test"]["n"] == int((split["subset"] == "test").sum())
    assert pd.read_csv(out / "split.csv", dtype=str)["subset"].tolist() == split["subset"].tolist()

    moved = split.copy()
    moved.loc[moved.index[moved["subset"] == "test"][0], "subset"] = "train"    # one test image was trained on
    with pytest.raises(ValueError, match="split digest mismatch"):
        finish_from_weights(config, str(weights), str(history), {"split_digest": splits.split_digest(moved)})


def test_the_gpu_pack_holds_the_training_and_validation_images_only(tiny_bundle, tmp_path):
    from gpu_pack import make_pack
    from skin_core import data, splits
    pack = make_pack(str(SAMPLE), str(tiny_bundle / "split.csv"), str(tmp_path / "pack"))
    split = pd.read_csv(tiny_bundle / "split.csv", dtype=str)
    shipped = {p.stem for p in (pack / "data" / "images").iterdir()}
    assert shipped == set(split.loc[split["subset"] != "test", "image_id"])
    packed = data.load_dataset(pack / "data").table               # a valid dataset on its own
    packed["subset"] = packed["image_id"].map(split.set_index("image_id")["subset"])
    assert splits.split_digest(packed) == splits.split_digest(split)  # what train.py --finish-from will check


def test_validation_comparison_reproduces_the_bundle_and_a_self_soup_or_ensemble_changes_nothing(tiny_bundle):
    from compare_on_validation import compare
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    views = manifest["test_time_augmentation"]
    other_views = "flips" if views != "flips" else "none"
    # the bundle's own views given after '@' win over the default views of the comparison
    own, soup, ensemble = compare([f"{tiny_bundle}@{views}", f"{tiny_bundle}+{tiny_bundle}@{views}",
                                   f"{tiny_bundle}@{views},{tiny_bundle}@{views}"], SAMPLE, views=other_views, rounds=50)
    # the same numbers finishing wrote into the manifest, from the same split, views and prior shift
    assert own["n"] == manifest["validation"]["n"]
    assert own["prior_shift"] == manifest["calibration"]["prior_shift"]
    assert own["balanced_accuracy"] == pytest.approx(manifest["validation"]["balanced_accuracy"])
    assert own["macro_f1"] == pytest.approx(manifest["validation"]["macro_f1"])
    assert soup["score"] == pytest.approx(own["score"]) and soup["diff_sd"] == 0.0
    assert ensemble["score"] == pytest.approx(own["score"]) and ensemble["diff_sd"] == 0.0
    # without '@' or --views, a bundle is scored with the views it is served with
    (as_served,) = compare([str(tiny_bundle)], SAMPLE, rounds=10)
    assert as_served["balanced_accuracy"] == pytest.approx(own["balanced_accuracy"])


def test_validation_comparison_refuses_a_bundle_split_another_way(tiny_bundle, tmp_path):
    from compare_on_validation import compare
    other = copy_of(tiny_bundle, tmp_path)
    split = pd.read_csv(other / bundles.SPLIT_FILE)
    trained, held = split.index[split["subset"] == "train"][0], split.index[split["subset"] == "val"][0]
    split.loc[[trained, held], "subset"] = ["val", "train"]   # it trained on one of the first's validation images
    write_split(other, split)
    with pytest.raises(bundles.BundleError, match="was not split like"):
        compare([str(tiny_bundle), str(other)], SAMPLE, rounds=10)


def test_validation_comparison_accepts_a_bundle_trained_on_a_share_of_the_same_training_images(tiny_bundle,
                                                                                              tmp_path):
    from compare_on_validation import compare
    fewer = copy_of(tiny_bundle, tmp_path)          # a learning-curve run: the same split, some training rows gone
    split = pd.read_csv(fewer / bundles.SPLIT_FILE)
    split = split.drop(split.index[split["subset"] == "train"][:5])
    write_split(fewer, split)
    own, other = compare([str(tiny_bundle), str(fewer)], SAMPLE, rounds=10)
    assert other["n"] == own["n"] and other["score"] == pytest.approx(own["score"])     # the same weights
    split.loc[split.index[split["subset"] == "val"][0], "subset"] = "test"     # validated on fewer images: refused
    write_split(fewer, split)
    with pytest.raises(bundles.BundleError, match="was not split like"):
        compare([str(tiny_bundle), str(fewer)], SAMPLE, rounds=10)


def balanced_accuracy_of_raw_logits(bundle) -> float:
    """Validation balanced accuracy of a bundle's argmax with no logit bias at all."""
    from compare_on_validation import ImagesAtSize, candidate_logits
    from sklearn.metrics import balanced_accuracy_score

    from skin_core import splits
    table = splits.load_under_split(SAMPLE, bundle / bundles.SPLIT_FILE)
    val = table[table["subset"] == "val"].reset_index(drop=True)
    logits = candidate_logits(str(bundle), ImagesAtSize(val, bundle), None)
    code = {c: i for i, c in enumerate(bundles.read_manifest(bundle)["classes"])}
    return balanced_accuracy_score(val["dx"].map(code), logits.argmax(axis=1))


def test_validation_comparison_scores_a_model_that_never_saw_the_validation_lesions_and_as_served(tiny_bundle,
                                                                                                   tmp_path):
    from compare_on_validation import compare
    elsewhere = copy_of(tiny_bundle, tmp_path)    # as if trained on another collection: these lesions unlisted
    split = pd.read_csv(elsewhere / bundles.SPLIT_FILE, dtype=str)
    validated = split.loc[split["subset"] == "val", "lesion_id"]
    write_split(elsewhere, split[~split["lesion_id"].isin(validated)])
    own, other = compare([str(tiny_bundle), str(elsewhere)], SAMPLE, rounds=10)
    assert other["n"] == own["n"] and other["score"] == pytest.approx(own["score"])     # the same weights
    # as served: the bundle's own logit bias is the prior shift finishing fitted on these images, so the
    # served answers score what the manifest recorded, with nothing refitted
    (served,) = compare([str(tiny_bundle)], SAMPLE, rounds=10, as_served=True)
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert served["prior_shift"] == 0.0
    assert served["balanced_accuracy"] == pytest.approx(manifest["validation"]["balanced_accuracy"])
    unshifted = shutil.copytree(tiny_bundle, tmp_path / "unshifted")    # served with no prior shift
    edit_manifest(unshifted, calibration={**manifest["calibration"], "prior_shift": 0.0})
    first, plain = compare([str(tiny_bundle), str(unshifted)], SAMPLE, rounds=10, as_served=True)
    refitted, _ = compare([str(unshifted), str(tiny_bundle)], SAMPLE, rounds=10)
    assert refitted["balanced_accuracy"] == pytest.approx(served["balanced_accuracy"])    # a refit finds it again
    assert plain["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_of_raw_logits(unshifted), abs=1e-9)                  # as served: nothing refitted


def test_a_learning_curve_dataset_keeps_the_bundles_held_out_lesions_and_a_share_of_its_training_ones(
        tiny_bundle, tmp_path, monkeypatch):
    import learning_curve_data
    from skin_core import data, splits
    out = tmp_path / "half"
    run_script(learning_curve_data, monkeypatch, "--data", SAMPLE, "--split-from", tiny_bundle, "--keep-one-in", 2,
               "--out", out)
    split = pd.read_csv(tiny_bundle / bundles.SPLIT_FILE, dtype=str)
    table = data.load_dataset(out).table                           # a dataset train.py can read
    table["subset"] = splits.subsets_from_file(table, tiny_bundle / bundles.SPLIT_FILE)   # and --split-from accepts
    for subset in ("val", "test"):
        assert set(table.loc[table["subset"] == subset, "image_id"]) == set(split.loc[split["subset"] == subset, "image_id"])
    trained, before = table[table["subset"] == "train"], split[split["subset"] == "train"]
    assert 0.3 < len(trained) / len(before) < 0.7
    # whole lesions: every photo of a kept training lesion is kept
    kept = before[before["lesion_id"].isin(trained["lesion_id"])]
    assert set(kept["image_id"]) == set(trained["image_id"])
    with pytest.raises(SystemExit):                                # never over an existing folder
        run_script(learning_curve_data, monkeypatch, "--data", SAMPLE, "--split-from", tiny_bundle,
                   "--keep-one-in", 2, "--out", out)


def test_metadata_gain_fits_on_the_training_images_the_model_never_saw_and_scores_on_validation(tiny_bundle,
                                                                                                tmp_path):
    from metadata_gain import measure
    from skin_core import data
    fewer = copy_of(tiny_bundle, tmp_path)          # a learning-curve run: every other training row gone
    split = pd.read_csv(fewer / bundles.SPLIT_FILE, dtype=str)
    dropped = split.index[split["subset"] == "train"][::2]
    unseen = set(split.loc[dropped, "lesion_id"])
    write_split(fewer, split.drop(dropped))
    result = measure(fewer, tiny_bundle, SAMPLE, rounds=10)
    assert result["fit_lesions"] == len(unseen) and result["fit_images"] == len(dropped)
    assert result["val_images"] == int((split["subset"] == "val").sum())
    heads = result["heads"]
    assert set(heads) == {"logits", "with age, sex and site"}
    assert all(0 <= h["balanced_accuracy"] <= 1 and h["score"] == pytest.approx(h["balanced_accuracy"] + h["macro_f1"])
               for h in heads.values())
    assert result["gain"] == pytest.approx(heads["with age, sex and site"]["score"] - heads["logits"]["score"])
    with pytest.raises(data.DatasetError, match="nothing left to fit on"):     # it trained on all of them
        measure(tiny_bundle, tiny_bundle, SAMPLE, rounds=10)
    no_age = tmp_path / "no_age"                     # a dataset without the patient's age
    shutil.copytree(SAMPLE / "HAM10000_images_part_1", no_age / "HAM10000_images_part_1")
    pd.read_csv(SAMPLE / "HAM10000_metadata.csv").drop(columns="age").to_csv(no_age / "HAM10000_metadata.csv",
                                                                             index=False)
    with pytest.raises(data.DatasetError, match="lacks the columns age"):
        measure(fewer, tiny_bundle, no_age, rounds=10)


def test_refinishing_a_weight_soup_writes_a_new_bundle_and_leaves_the_source_alone(tiny_bundle, tmp_path,
                                                                                   monkeypatch):
    import refinish
    before = {p.name: p.read_bytes() for p in tiny_bundle.iterdir()}
    source_log = tiny_bundle.parent / bundles.read_manifest(tiny_bundle)["training"]["progress_file"]
    source_log_before = source_log.read_bytes()
    out = tmp_path / "soup"
    run_script(refinish, monkeypatch, tiny_bundle, "--average-with", tiny_bundle, "--out", out, "--data", SAMPLE)
    assert {p.name: p.read_bytes() for p in tiny_bundle.iterdir()} == before
    # the source run's progress log is its own: re-finishing neither writes to it nor needs its folder
    assert source_log.read_bytes() == source_log_before
    soup, source = bundles.load_bundle(out), bundles.load_bundle(tiny_bundle)
    # the mean of a bundle's weights with themselves is the bundle: same weights, same validation figures
    for mine, theirs in zip(soup.model.get_weights(), source.model.get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-7)
    assert soup.manifest["validation"]["balanced_accuracy"] == pytest.approx(
        source.manifest["validation"]["balanced_accuracy"])
    assert (out / bundles.SPLIT_FILE).read_bytes() == (tiny_bundle / bundles.SPLIT_FILE).read_bytes()
    # averaged weights were never trained as such, so the soup does not claim its first bundle's curves
    assert not (out / bundles.HISTORY_FILE).exists() and (tiny_bundle / bundles.HISTORY_FILE).exists()
    assert soup.manifest["training"]["weights_averaged_with"] == [tiny_bundle.name]
    assert soup.name == f"{source.name} (re-finished)" and soup.manifest["training"]["progress_file"] is None
    with pytest.raises(SystemExit, match="already exists; re-finish into a new folder"):
        run_script(refinish, monkeypatch, tiny_bundle, "--out", tiny_bundle, "--data", SAMPLE)
    with pytest.raises(SystemExit, match="error: Dataset folder not found"):
        run_script(refinish, monkeypatch, tiny_bundle, "--out", tmp_path / "x", "--data", tmp_path / "nowhere")
    assert {p.name: p.read_bytes() for p in tiny_bundle.iterdir()} == before and not (tmp_path / "x").exists()
    run_script(refinish, monkeypatch, out, "--out", tmp_path / "again", "--data", SAMPLE)   # a soup has no history
    assert bundles.load_bundle(tmp_path / "again").manifest["training"]["weights_averaged_with"] == [tiny_bundle.name]


def test_a_refinished_bundle_still_lists_what_its_weights_learnt_from_other_datasets(tiny_bundle, tmp_path,
                                                                                     monkeypatch):
    """A bundle whose split lists images of another collection (learnt through its starting bundle) keeps those
    rows when re-finished on its own dataset, so an evaluation on that collection still leaves them out."""
    import refinish
    source = tmp_path / "three_sites"
    shutil.copytree(tiny_bundle, source)
    other_site = pd.DataFrame({"image_id": ["BCN_0000001", "BCN_0000002"], "lesion_id": ["BCN_L1", "BCN_L2"],
                               "dx": ["mel", "nv"], "subset": ["train", "test"]})
    split = pd.concat([pd.read_csv(source / bundles.SPLIT_FILE), other_site], ignore_index=True)
    split.to_csv(source / bundles.SPLIT_FILE, index=False)
    manifest = json.loads((source / bundles.MANIFEST_FILE).read_text())
    manifest["files"][bundles.SPLIT_FILE] = bundles.sha256_file(source / bundles.SPLIT_FILE)
    (source / bundles.MANIFEST_FILE).write_text(json.dumps(manifest))
    run_script(refinish, monkeypatch, source, "--out", tmp_path / "again", "--data", SAMPLE)
    kept = pd.read_csv(tmp_path / "again" / bundles.SPLIT_FILE).set_index("image_id")
    assert kept.loc["BCN_0000001", "subset"] == "train" and kept.loc["BCN_0000002", "subset"] == "test"
    assert len(kept) == len(split)


def test_a_bundle_refinished_at_another_input_size_keeps_its_weights_and_says_where_they_were_trained(
        tiny_bundle, tmp_path, monkeypatch):
    import refinish
    from compare_on_validation import compare
    out = tmp_path / "larger"
    run_script(refinish, monkeypatch, tiny_bundle, "--img-size", 48, "--out", out, "--data", SAMPLE)
    larger, source = bundles.load_bundle(out), bundles.load_bundle(tiny_bundle)
    assert source.input_size == 32 and larger.input_size == 48
    assert larger.model.input_shape == (None, 48, 48, 3)
    for mine, theirs in zip(larger.model.get_weights(), source.model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    assert larger.manifest["training"]["img_size"] == 48
    assert larger.manifest["training"]["trained_img_size"] == 32
    # the comparison reads the photos at each candidate's own size (a 32 px array cannot enter a 48 px model)
    own, bigger = compare([str(tiny_bundle), str(out)], SAMPLE, rounds=20)
    assert bigger["balanced_accuracy"] == pytest.approx(larger.manifest["validation"]["balanced_accuracy"])
    assert own["balanced_accuracy"] == pytest.approx(source.manifest["validation"]["balanced_accuracy"])


def test_a_weight_soup_is_the_mean_of_its_bundles_and_refuses_another_split(tiny_bundle, tmp_path):
    first, second = bundles.load_bundle(tiny_bundle), bundles.load_bundle(tiny_bundle)
    original = first.model.get_weights()
    second.model.set_weights([w + 1.0 for w in original])
    soup = bundles.weight_soup([first, second])
    for mixed, own in zip(soup.get_weights(), original):
        np.testing.assert_allclose(mixed, own + 0.5, rtol=0, atol=1e-6)
    # a bundle whose split differs (other lesions held out) cannot join: its test images may be in our training set
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    split = pd.read_csv(other / bundles.SPLIT_FILE)
    split.loc[split["subset"] == "test", "subset"] = "train"
    split.to_csv(other / bundles.SPLIT_FILE, index=False)
    assert bundles.shares_split(tiny_bundle, tiny_bundle) and not bundles.shares_split(tiny_bundle, other)
    assert not bundles.shares_split(tiny_bundle, tmp_path)          # a folder without split.csv shares nothing
    stranger = bundles.Bundle(path=other, manifest=second.manifest, model=second.model)
    before = [w.copy() for w in first.model.get_weights()]
    with pytest.raises(bundles.BundleError, match="same dataset and split"):
        bundles.weight_soup([first, stranger])
    assert all(np.array_equal(a, b) for a, b in zip(first.model.get_weights(), before))


def test_gpu_run_settings_refuse_what_the_gpu_script_cannot_do(tmp_path):
    """scripts/train_gpu.py feeds arrays to fit(): it cannot sample balanced batches, so asking for that
    (or for a setting it does not know) must stop it rather than train something else silently."""
    import os
    import subprocess
    import sys
    script = SAMPLE.parent / "scripts"
    specs = ["a:epochs=5,photometric=true,colour_constancy=true,compression=true,balance=sqrt_weights,lr=2e-4",
             "b:photometric=false", "c:balance=sampling", "d:epoch=5"]
    # one process of its own: the script defaults Keras to the PyTorch backend, which must not leak into this one
    probe = ("import sys, json, io, contextlib; sys.path.insert(0, sys.argv[1]); from train_gpu import parse_run\n"
             "for spec in sys.argv[2:]:\n"
             "    err = io.StringIO()\n"
             "    try:\n"
             "        with contextlib.redirect_stderr(err): out = {'settings': parse_run(spec)[1]}\n"
             "    except SystemExit as exc: out = {'refused': str(exc.code) + err.getvalue()}\n"
             "    print(json.dumps(out))")
    done = subprocess.run([sys.executable, "-c", probe, str(script), *specs], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 0, done.stderr[-1000:]
    ok, plain, sampling, unknown = (json.loads(line) for line in done.stdout.strip().splitlines()[-4:])
    settings = ok["settings"]
    assert settings["epochs"] == 5 and settings["photometric"] is True and settings["lr"] == 2e-4
    assert settings["colour_constancy"] is True and settings["compression"] is True
    assert plain["settings"]["photometric"] is False and plain["settings"]["compression"] is False
    assert "use train.py for balanced sampling" in sampling["refused"]
    assert "unknown setting 'epoch'" in unknown["refused"]


def test_early_stopping_waits_for_patience_from_then_stops(tmp_path):
    """A fine-tuning phase that cannot improve (learning rate 0, body frozen) stops one epoch after the first
    watched epoch: without patience_from that is epoch 3 of 6; from epoch 4 on, it is epoch 5."""
    from skin_core.progress import ProgressLog
    from skin_core.training import TrainConfig, fit, prepare
    config = TrainConfig(data=str(SAMPLE), out=str(tmp_path / "unused"), epochs=6, head_epochs=1, img_size=32,
                         alpha=0.25, weights=None, batch_size=16, lr=0.0, fine_tune_fraction=0.0, patience=1,
                         patience_from=3, test_fraction=0.2, val_fraction=0.2, workers=2)
    _, history, _ = fit(config, prepare(config, ProgressLog(None)), ProgressLog(None))
    assert list(history.index) == [1, 2, 3, 4, 5]
    assert history.loc[2:, "val_macro_f1"].nunique() == 1   # nothing moved, so only the watch start decides


def test_training_with_the_logit_adjusted_loss_shifts_by_the_training_split_prior(tmp_path):
    from skin_core.progress import ProgressLog
    from skin_core.recipe import LogitAdjustedCrossEntropy
    from skin_core.training import TrainConfig, fit, prepare
    config = TrainConfig(data=str(SAMPLE), out=str(tmp_path / "unused"), epochs=1, head_epochs=1, img_size=32,
                         alpha=0.25, weights=None, batch_size=16, balance="logit_adjusted", test_fraction=0.2,
                         val_fraction=0.2, workers=2)
    prep = prepare(config, ProgressLog(None))
    model, history, _ = fit(config, prep, ProgressLog(None))
    labels = prep.subset("train")[1]
    assert isinstance(model.loss, LogitAdjustedCrossEntropy)
    np.testing.assert_allclose(np.exp(model.loss.log_prior), np.bincount(labels, minlength=7) / len(labels), rtol=1e-6)
    assert list(history.index) == [1] and np.isfinite(history["loss"]).all()


def test_a_report_on_another_dataset_is_named_after_its_folder_and_stays_in_the_bundle(tmp_path, monkeypatch):
    name = bundles.dataset_report_file("/data/ISIC 2019/")
    assert re.fullmatch(r"evaluation-ISIC_2019-[0-9a-f]{8}\.json", name)
    assert name == bundles.dataset_report_file("/data/ISIC 2019")       # the same folder: its report is replaced
    assert name != bundles.dataset_report_file("/other/ISIC 2019")      # same name elsewhere: a report of its own
    monkeypatch.chdir(tmp_path / "..")
    assert bundles.dataset_report_file(tmp_path.name) == bundles.dataset_report_file(str(tmp_path))
    assert re.fullmatch(r"evaluation-etc-[0-9a-f]{8}\.json", bundles.dataset_report_file("../../etc"))
    assert re.fullmatch(r"evaluation-dataset-[0-9a-f]{8}\.json", bundles.dataset_report_file("/"))


def test_a_bundle_without_a_familiarity_model_gets_one_from_its_own_training_images(tiny_bundle, tmp_path,
                                                                                   monkeypatch):
    import fit_familiarity
    trained = bundles.load_bundle(tiny_bundle).familiarity         # training writes one into every bundle
    assert trained is not None and np.isfinite(trained.threshold)
    older = copy_of(tiny_bundle, tmp_path)                           # as bundles were before it existed
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest["files"]["familiarity.npz"], manifest["familiarity"]
    (older / "manifest.json").write_text(json.dumps(manifest))
    (older / "familiarity.npz").unlink()
    assert bundles.load_bundle(older).familiarity is None
    weights_before = (older / "model.keras").read_bytes()
    run_script(fit_familiarity, monkeypatch, older, "--data", SAMPLE)
    added = bundles.load_bundle(older)
    # the same training and validation images, the same features: the same reference and threshold
    np.testing.assert_allclose(added.familiarity.reference, trained.reference, atol=2e-3)
    assert added.familiarity.threshold == pytest.approx(trained.threshold, rel=1e-2)
    assert added.manifest["familiarity"]["reference_images"] == len(trained.reference)
    assert (older / "model.keras").read_bytes() == weights_before
    manifest_before = (older / "manifest.json").read_bytes()
    with pytest.raises(SystemExit, match="already has a familiarity model"):
        run_script(fit_familiarity, monkeypatch, older, "--data", SAMPLE)
    with pytest.raises(bundles.BundleError, match="already has a familiarity model"):
        bundles.add_familiarity(older, added.familiarity, {})
    assert (older / "manifest.json").read_bytes() == manifest_before


def test_the_detail_estimate_passes_over_a_decompression_bomb(tmp_path):
    # the dataset's median photo size is read before any image is decoded; a bomb is for read_images to
    # name (or skip with --skip-bad), not a traceback here
    from PIL import Image
    from skin_core.training import _median_short_side
    Image.new("1", (15000, 15000)).save(tmp_path / "bomb.png")          # 225 megapixels, a few kB on disk
    for n, size in enumerate(((200, 150), (300, 250), (640, 450))):
        Image.new("RGB", size).save(tmp_path / f"{n}.jpg")
    paths = [str(tmp_path / name) for name in ("bomb.png", "0.jpg", "1.jpg", "2.jpg")]
    assert _median_short_side(pd.DataFrame({"path": paths})) == 250
