"""Splitting by lesion without leaks, and keeping to (or checking a run against) a bundle's recorded split."""
import shutil

import pandas as pd
import pytest

from skin_core import data, splits
from skin_core.classes import CLASS_CODES
from conftest import make_folder_dataset, make_ham_dataset


def test_split_keeps_every_lesion_on_one_side_and_every_class_everywhere():
    # 600 images of 250 lesions, several images per lesion, an nv-heavy mix like HAM10000
    rows = []
    for lesion in range(250):
        dx = CLASS_CODES[lesion % 7] if lesion < 140 else "nv"
        rows += [{"image_id": f"img{lesion}_{k}", "lesion_id": f"L{lesion}", "dx": dx}
                 for k in range(1 + lesion % 4)]
    table = pd.DataFrame(rows)
    subset = splits.split_by_lesion(table, test_fraction=0.2, val_fraction=0.15, seed=3)
    sides = table.assign(subset=subset).groupby("lesion_id")["subset"].nunique()
    assert (sides == 1).all()
    for name in ("train", "val", "test"):
        assert set(table.loc[subset == name, "dx"]) == set(CLASS_CODES)
    assert 0.12 < (subset == "test").mean() < 0.28
    again = splits.split_by_lesion(table, test_fraction=0.2, val_fraction=0.15, seed=3)
    assert (again == subset).all()


def test_lesions_joined_by_a_copy_move_to_the_first_side_any_is_on_and_no_other_row_moves():
    subset = pd.Series(["test", "val", "train", "test", "val", "test", "test"], index=range(10, 17))
    groups = pd.Series(["A", "A", "B", "B", "C", "D", "D"], index=range(10, 17))
    moved = splits.keep_copies_together(subset, groups)
    assert moved.to_dict() == dict(zip(range(10, 17), ["val", "val", "train", "train", "val", "test", "test"]))


def test_a_bundles_split_file_gives_each_row_its_subset_and_must_list_every_image(tmp_path, sample_meta):
    root = make_ham_dataset(tmp_path / "ham", sample_meta)
    table = data.load_dataset(root).table
    table["subset"] = splits.split_by_lesion(table, test_fraction=0.2, val_fraction=0.2, seed=3)
    table[["image_id", "subset"]].to_csv(tmp_path / "split.csv", index=False)
    revisited = splits.load_under_split(root, tmp_path / "split.csv")
    assert revisited.set_index("image_id")["subset"].to_dict() == table.set_index("image_id")["subset"].to_dict()
    table[["image_id", "subset"]].iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(data.DatasetError, match="1 images are not in"):
        splits.load_under_split(root, tmp_path / "short.csv")
    # the check the Retrain form makes before launching a run on another model's split
    assert splits.split_problem(table, tmp_path / "split.csv") is None
    assert "does not cover this dataset: 1 images are not in" in splits.split_problem(table, tmp_path / "short.csv")
    assert "no nowhere.csv beside that model" in splits.split_problem(table, tmp_path / "nowhere.csv")


def test_a_bundles_split_is_revisited_on_a_dataset_whose_other_labels_its_run_left_out(tmp_path, sample_meta):
    # an ISIC download with SCC photos, trained on with skip_other_labels: the scripts must read it as the run did
    root = make_folder_dataset(tmp_path / "folders", sample_meta)
    (root / "scc").mkdir()
    shutil.copy(sample_meta["path"][0], root / "scc" / "extra.jpg")
    table = data.load_dataset(root, skip_other_labels=True).table
    table["subset"] = splits.split_by_lesion(table, test_fraction=0.2, val_fraction=0.2, seed=3)
    table[["image_id", "subset"]].to_csv(tmp_path / "split.csv", index=False)
    revisited = splits.load_under_split(root, tmp_path / "split.csv")
    assert len(revisited) == len(sample_meta) and "extra" not in set(revisited["image_id"])
    assert (revisited.set_index("image_id")["subset"] == table.set_index("image_id")["subset"]).all()
    rows, missing = splits.rows_in_split([root], table)
    assert missing == 0 and set(rows["image_id"]) == set(table.loc[table["subset"] != "test", "image_id"])


def test_the_leak_check_matches_numeric_image_ids(tmp_path, sample_meta):
    # file names such as 0001.jpg: the starting model's split.csv must be read as text to match them
    renamed = sample_meta.assign(image_id=[f"{i:04d}" for i in range(len(sample_meta))])
    table = data.load_dataset(make_folder_dataset(tmp_path / "folders", renamed)).table
    table["subset"] = splits.split_by_lesion(table, test_fraction=0.2, val_fraction=0.2, seed=3)
    table[["image_id", "subset"]].to_csv(tmp_path / "split.csv", index=False)
    assert splits.held_out_leak(tmp_path / "split.csv", table) is None
    reshuffled = table.assign(subset=splits.split_by_lesion(table, test_fraction=0.2, val_fraction=0.2, seed=4))
    assert "trained or tuned on" in splits.held_out_leak(tmp_path / "split.csv", reshuffled)
    (tmp_path / "other.csv").write_text("name,part\n0001,train\n")
    assert "other.csv cannot be read (no image_id or subset column)" in splits.held_out_leak(tmp_path / "other.csv", table)


def test_the_leak_check_sees_another_photo_of_a_lesion_the_starting_model_learned_from(tmp_path, sample_meta):
    table = data.load_dataset(make_ham_dataset(tmp_path / "ham", sample_meta)).table
    table["subset"] = splits.split_by_lesion(table, test_fraction=0.2, val_fraction=0.2, seed=3)
    table[["image_id", "lesion_id", "subset"]].to_csv(tmp_path / "split.csv", index=False)
    trained = table[table["subset"] == "train"].iloc[0]
    # a later download: a second photo of a lesion the model trained on, which a fresh split puts in test
    later = pd.concat([table.assign(subset="train"),
                       pd.DataFrame([{**trained, "image_id": "ISIC_9999999", "subset": "test"}])], ignore_index=True)
    assert "or other photos of their lesions" in splits.held_out_leak(tmp_path / "split.csv", later)
    assert "ISIC_9999999" in splits.held_out_leak(tmp_path / "split.csv", later)
    left, dropped = splits.leave_out_seen(later[later["subset"] == "test"], tmp_path / "split.csv")
    assert left.empty and dropped == 1                    # evaluation leaves it out by the same rule


def test_a_split_file_listing_an_image_twice_is_refused(tmp_path, sample_meta):
    table = data.load_dataset(make_ham_dataset(tmp_path / "ham", sample_meta)).table
    doubled = pd.DataFrame({"image_id": list(table["image_id"]) + [table["image_id"][0]],
                            "subset": ["train"] * len(table) + ["test"]})
    doubled.to_csv(tmp_path / "split.csv", index=False)
    assert "lists some images twice" in splits.split_problem(table, tmp_path / "split.csv")
    with pytest.raises(data.DatasetError, match="lists some images twice"):       # a run reusing it, too
        splits.split_by_source(table, split_csv=tmp_path / "split.csv")
    # the Diagnose page's examples then say nothing of the subsets, rather than fail
    assert {subset for _, _, subset in splits.sample_examples(tmp_path / "split.csv")} == {None}


def test_examples_prefer_images_the_shown_model_never_saw_and_say_which_it_did(tmp_path):
    table = data.load_dataset(data.SAMPLE_DIR).table
    # a model whose split holds out the last sample of each class except bcc, and nothing of bcc
    last = table.groupby("dx").tail(1)
    split = table[["image_id"]].assign(subset="train")
    split.loc[last.index[last["dx"] != "bcc"], "subset"] = "test"
    split.to_csv(tmp_path / "split.csv", index=False)
    examples = {dx: (path.stem, subset) for dx, path, subset in splits.sample_examples(tmp_path / "split.csv")}
    assert sorted(examples) == sorted(CLASS_CODES)
    for dx, (image_id, subset) in examples.items():
        if dx == "bcc":
            assert subset == "train"
        else:
            assert (image_id, subset) == (last.loc[last["dx"] == dx, "image_id"].item(), "test")
    # without a split (or with an unreadable one) the subsets are unknown, never guessed
    (tmp_path / "broken.csv").write_text("not,a split\n")
    for split_csv in (None, tmp_path / "broken.csv"):
        assert {subset for _, _, subset in splits.sample_examples(split_csv)} == {None}
