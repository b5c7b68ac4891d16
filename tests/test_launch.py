"""What a run launched from the Retrain form becomes: its split, its starting weights and their shape."""
import pandas as pd
import pytest

from skin_core import data, launch
from conftest import SAMPLE, make_folder_dataset, make_ham_dataset

FORM = {"data": "somewhere", "epochs": 3, "img_size": 128, "alpha": 0.5, "seed": 42}


def test_a_run_from_imagenet_weights_keeps_the_form_settings(tiny_bundle):
    table = data.load_dataset(SAMPLE).table
    config, notes = launch.plan_run(FORM, table, start_from="imagenet", same_lesions=False, active=tiny_bundle)
    # early stopping watches the second half of the schedule unless the form says otherwise
    assert config == {**FORM, "weights": "imagenet", "patience_from": FORM["epochs"] // 2} and notes == []
    assert launch.plan_run({**FORM, "patience_from": 0}, table, start_from="imagenet", same_lesions=False,
                           active=tiny_bundle)[0]["patience_from"] == 0
    config, _ = launch.plan_run(FORM, table, start_from="none", same_lesions=True, active=tiny_bundle)
    assert config["weights"] == "none" and config["split_from"] == str(tiny_bundle)


def test_a_run_from_the_active_model_continues_its_weights_at_their_shape_on_its_split(tiny_bundle):
    table = data.load_dataset(SAMPLE).table            # the active model's own dataset: its split covers it
    config, notes = launch.plan_run(FORM, table, start_from="active", same_lesions=False, active=tiny_bundle)
    assert config["init_bundle"] == config["split_from"] == str(tiny_bundle)
    assert (config["img_size"], config["alpha"]) == (32, 0.25) and "weights" not in config
    assert any("Input size 32 px and width 0.25 are the active model's" in note for note in notes)
    _, notes = launch.plan_run({**FORM, "img_size": 32, "alpha": 0.25}, table, start_from="active",
                               same_lesions=False, active=tiny_bundle)
    assert not any("Input size" in note for note in notes)


def test_a_run_that_would_test_on_images_the_active_model_learned_from_is_refused(tiny_bundle, tmp_path,
                                                                                    sample_meta):
    extra = sample_meta.head(1).assign(image_id="ISIC_9999999", lesion_id="HAM_9999999")
    bigger = data.load_dataset(make_ham_dataset(tmp_path / "bigger", pd.concat([sample_meta, extra]))).table
    with pytest.raises(launch.LaunchError, match="does not cover this dataset"):
        launch.plan_run(FORM, bigger, start_from="imagenet", same_lesions=True, active=tiny_bundle)
    with pytest.raises(launch.LaunchError, match="trained or tuned on.*Start from the ImageNet weights instead"):
        launch.plan_run(FORM, bigger, start_from="active", same_lesions=False, active=tiny_bundle)
    with pytest.raises(launch.LaunchError, match="Unknown starting point"):
        launch.plan_run(FORM, bigger, start_from="The active model", same_lesions=False, active=tiny_bundle)


def test_a_run_from_the_active_model_on_its_collection_and_another_keeps_its_split_of_the_first(tiny_bundle,
                                                                                              tmp_path, sample_meta):
    """Training on more sites from the active model (as the default was made): the collection it learnt from keeps
    its recorded split and the new one is split afresh; the form must plan the split training will make."""
    from skin_core import splits
    other = make_folder_dataset(tmp_path / "other_site", sample_meta.assign(image_id="site2_" + sample_meta["image_id"]))
    table = data.load_datasets([SAMPLE, other]).table
    config, notes = launch.plan_run(FORM, table, start_from="active", same_lesions=False, active=tiny_bundle)
    assert config["split_from"] == config["init_bundle"] == str(tiny_bundle)
    assert any("keeps the active model's split of the collections it was trained on" in note for note in notes)
    made, how = splits.split_by_source(table, split_csv=tiny_bundle / "split.csv", seed=FORM["seed"])   # as training
    assert splits.held_out_leak(tiny_bundle / "split.csv", table.assign(subset=made)) is None
    recorded = pd.read_csv(tiny_bundle / "split.csv", dtype=str).set_index("image_id")["subset"]
    first = table["source"] == SAMPLE.name
    assert (made[first] == table.loc[first, "image_id"].map(recorded)).all()
    assert set(made[~first]) == {"train", "val", "test"} and how["other_site"].startswith("StratifiedGroupKFold")


def test_a_run_from_an_active_ensemble_continues_one_of_its_networks(tiny_bundle, tmp_path):
    """The served default is two networks side by side; train.py continues one network (--init-member), so the
    form offers each network instead of the whole, and refuses the whole before a job would fail."""
    import json
    import shutil
    pair = tmp_path / "pair"
    shutil.copytree(tiny_bundle, pair)
    manifest = json.loads((pair / "manifest.json").read_text())
    manifest["training"]["ensemble_of"] = ["r50", "r45"]
    (pair / "manifest.json").write_text(json.dumps(manifest))
    assert launch.start_choices(pair) == {"imagenet": "ImageNet weights", "member-1": "Network 1 of the active "
                                          "model (r50)", "member-2": "Network 2 of the active model (r45)",
                                          "none": "No weights (random)"}
    assert list(launch.start_choices(tiny_bundle)) == ["imagenet", "active", "none"]
    table = data.load_dataset(SAMPLE).table
    with pytest.raises(launch.LaunchError, match="2 networks side by side \\(an ensemble of r50 and r45\\): "
                                                 "choose one of its networks"):
        launch.plan_run(FORM, table, start_from="active", same_lesions=False, active=pair)
    config, notes = launch.plan_run(FORM, table, start_from="member-2", same_lesions=False, active=pair)
    assert (config["init_bundle"], config["init_member"], config["split_from"]) == (str(pair), 2, str(pair))
    assert (config["img_size"], config["alpha"]) == (32, 0.25)
    assert any("continues network 2 of the active model (r45)" in note for note in notes)
    assert any("keeps only the mean of its networks' output biases" in note for note in notes)
    manifest["training"]["member_biases"] = [[0.0] * 7, [1.0] * 7]    # an ensemble that records each network's
    (pair / "manifest.json").write_text(json.dumps(manifest))
    _, notes = launch.plan_run(FORM, table, start_from="member-2", same_lesions=False, active=pair)
    assert any("(r45), as it was when the ensemble was joined" in note for note in notes)
    assert not any("mean of its networks' output biases" in note for note in notes)
    with pytest.raises(launch.LaunchError, match="holds 2 networks; it has no network 3"):
        launch.plan_run(FORM, table, start_from="member-3", same_lesions=False, active=pair)
    with pytest.raises(launch.LaunchError, match="holds one network; it has no network 1"):
        launch.plan_run(FORM, table, start_from="member-1", same_lesions=False, active=tiny_bundle)
    with pytest.raises(launch.LaunchError, match="Unknown starting point 'member-x'"):
        launch.plan_run(FORM, table, start_from="member-x", same_lesions=False, active=pair)
