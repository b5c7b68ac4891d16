"""Reading datasets in every layout, and refusing bad ones clearly."""
import shutil

import pandas as pd
import pytest

from skin_core import data
from skin_core.classes import CLASS_CODES
from conftest import SAMPLE, make_folder_dataset, make_ham_dataset


def test_reads_official_layout_across_part_folders(tmp_path, sample_meta):
    ds = data.load_dataset(make_ham_dataset(tmp_path / "ham", sample_meta))
    assert ds.layout == "ham10000"
    assert len(ds.table) == 70
    assert ds.counts() == {c: 10 for c in CLASS_CODES}
    assert ds.table["path"].str.contains("HAM10000_images_part_2").any()
    assert (ds.table["lesion_id"] == sample_meta["lesion_id"]).all()


def test_reads_class_folders_and_each_image_is_its_own_lesion(tmp_path, sample_meta):
    ds = data.load_dataset(make_folder_dataset(tmp_path / "folders", sample_meta))
    assert ds.layout == "folders"
    assert ds.counts() == {c: 10 for c in CLASS_CODES}
    assert (ds.table["lesion_id"] == ds.table["image_id"]).all()


def test_class_folders_take_lesion_ids_from_a_csv(tmp_path, sample_meta):
    root = make_folder_dataset(tmp_path / "folders", sample_meta)
    sample_meta[["image_id", "lesion_id"]].to_csv(root / "lesions.csv", index=False)
    ds = data.load_dataset(root)
    assert set(ds.table["lesion_id"]) == set(sample_meta["lesion_id"])


def test_the_lesion_table_beside_class_folders_is_the_csv_that_has_lesions(tmp_path, sample_meta):
    root = make_folder_dataset(tmp_path / "folders", sample_meta)
    (root / "attribution.csv").write_text("image_id,credit\nISIC_0000000,someone\n")    # read first, not it
    sample_meta[["image_id", "lesion_id"]].to_csv(root / "lesions.csv", index=False)
    assert set(data.load_dataset(root).table["lesion_id"]) == set(sample_meta["lesion_id"])
    (root / "lesions.csv").rename(root / "metadata.csv")        # a metadata name, but no dx: still the lesions
    ds = data.load_dataset(root)
    assert ds.layout == "folders" and set(ds.table["lesion_id"]) == set(sample_meta["lesion_id"])


def test_labels_written_in_capitals_or_with_spaces_read_as_the_seven_codes(tmp_path, sample_meta):
    meta = sample_meta.copy()
    meta["dx"] = meta["dx"].str.upper().radd(" ")        # ISIC's "MEL", padded by a spreadsheet
    ds = data.load_dataset(make_ham_dataset(tmp_path / "ham", meta))
    assert ds.counts() == {c: 10 for c in CLASS_CODES}

    root = make_folder_dataset(tmp_path / "folders", sample_meta)
    for code in CLASS_CODES:
        (root / code).rename(root / code.upper())
    ds = data.load_dataset(root)
    assert ds.layout == "folders" and ds.counts() == {c: 10 for c in CLASS_CODES}


def test_empty_folder(tmp_path):
    with pytest.raises(data.DatasetError, match="empty"):
        data.load_dataset(tmp_path)


def test_no_labels(tmp_path, sample_meta):
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "a.jpg").write_bytes(open(sample_meta["path"][0], "rb").read())
    with pytest.raises(data.DatasetError, match="No labels"):
        data.load_dataset(tmp_path)


def test_unknown_dx_values_are_named_with_first_rows(tmp_path, sample_meta):
    meta = sample_meta.copy()
    meta.loc[[0, 1], "dx"] = "melanoma"
    with pytest.raises(data.DatasetError, match=r"unknown dx values \['melanoma'\].*" + meta["image_id"][0]):
        data.load_dataset(make_ham_dataset(tmp_path / "ham", meta))


def test_an_evaluation_may_leave_out_labels_beyond_the_seven_and_records_them(tmp_path, sample_meta):
    meta = sample_meta.copy()
    meta.loc[[0, 1], "dx"] = ["SCC", "unk"]
    root = make_ham_dataset(tmp_path / "ham", meta)
    with pytest.raises(data.DatasetError, match="--skip-other-labels"):
        data.load_dataset(root, every_class=False)
    ds = data.load_dataset(root, every_class=False, skip_other_labels=True)
    assert len(ds.table) == 68 and ds.table["dx"].isin(CLASS_CODES).all()
    assert ds.skipped == [f"{meta['image_id'][0]}: labelled 'scc', not one of the model's classes",
                          f"{meta['image_id'][1]}: labelled 'unk', not one of the model's classes"]


def test_missing_images_are_named(tmp_path, sample_meta):
    root = make_ham_dataset(tmp_path / "ham", sample_meta)
    missing = sample_meta["image_id"][3]
    next(root.rglob(f"{missing}.jpg")).unlink()
    with pytest.raises(data.DatasetError, match=f"1 images listed in the metadata are missing: {missing}"):
        data.load_dataset(root)
    assert len(data.load_dataset(root, skip_bad=True).table) == 69


def test_a_dataset_whose_images_are_all_missing_is_refused_even_when_skipping_and_testing(tmp_path, sample_meta):
    root = make_ham_dataset(tmp_path / "ham", sample_meta, images=False)
    with pytest.raises(data.DatasetError, match="None of the 70 images listed in the metadata could be found"):
        data.load_dataset(root, skip_bad=True, every_class=False)


def test_unreadable_images_are_counted_and_named(tmp_path, sample_meta):
    root = make_ham_dataset(tmp_path / "ham", sample_meta)
    broken = sample_meta["image_id"][5]
    path = next(root.rglob(f"{broken}.jpg"))
    path.write_bytes(path.read_bytes()[:300])
    table = data.load_dataset(root).table
    with pytest.raises(data.DatasetError, match=f"1 images cannot be read: {broken}.jpg"):
        data.read_images(table, 32)
    arrays = data.read_images(table, 32, skip_bad=True)
    assert arrays.pixels.shape == (69, 32, 32, 3)
    assert broken not in set(arrays.table["image_id"])
    with pytest.raises(data.DatasetError, match=f"None of the 1 images can be read: {broken}.jpg"):
        data.read_images(table[table["image_id"] == broken], 32, skip_bad=True)   # not an empty set to go on with


def test_a_file_given_for_the_dataset_folder_is_named_as_a_file(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(data.DatasetError, match="photo.jpg is a file, not a dataset folder"):
        data.load_dataset(tmp_path / "photo.jpg")


def test_a_class_without_images_is_refused_for_training_but_not_for_testing(tmp_path, sample_meta):
    root = make_ham_dataset(tmp_path / "ham", sample_meta[sample_meta["dx"] != "df"])
    with pytest.raises(data.DatasetError, match="no images: df"):
        data.load_dataset(root)
    assert data.load_dataset(root, every_class=False).counts()["df"] == 0


def test_a_folder_path_that_is_not_a_path_is_a_message(tmp_path, sample_meta, monkeypatch):
    with pytest.raises(data.DatasetError, match="Not a usable folder path"):
        data.load_dataset("~no-such-user-here/data")
    with pytest.raises(data.DatasetError, match="not found"):
        data.load_dataset("data\0set")
    monkeypatch.setenv("HOME", str(tmp_path))
    make_ham_dataset(tmp_path / "ham", sample_meta)
    assert len(data.load_dataset("~/ham").table) == 70       # as a README path would be typed


def test_unknown_class_folder(tmp_path, sample_meta):
    root = make_folder_dataset(tmp_path / "folders", sample_meta)
    (root / "squamous cell carcinoma").mkdir()
    with pytest.raises(data.DatasetError, match="Unknown class folders squamous cell carcinoma"):
        data.load_dataset(root)


WORDS = {"akiec": "actinic keratosis", "bcc": "basal cell carcinoma", "bkl": "pigmented benign keratosis",
         "df": "dermatofibroma", "mel": "melanoma", "nv": "nevus", "vasc": "vascular lesion"}


def test_class_folders_named_in_words_are_read_as_their_classes(tmp_path, sample_meta):
    """As a widely shared ISIC collection is laid out: nine folders named in words, two of them beyond the seven
    (squamous cell carcinoma; seborrheic keratosis beside pigmented benign keratosis, both bkl)."""
    root = tmp_path / "Train"
    for n, row in enumerate(sample_meta.itertuples()):
        folder = "seborrheic keratosis" if row.dx == "bkl" and n % 2 else WORDS[row.dx]
        (root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(row.path, root / folder / f"{row.image_id}.jpg")
    (root / "squamous cell carcinoma").mkdir()
    shutil.copy(sample_meta["path"][0], root / "squamous cell carcinoma" / "ISIC_scc.jpg")
    with pytest.raises(data.DatasetError, match="Unknown class folders squamous cell carcinoma"):
        data.load_dataset(root)
    dataset = data.load_dataset(root, skip_other_labels=True)
    assert dataset.layout == "folders"
    assert dataset.table.set_index("image_id")["dx"].to_dict() == sample_meta.set_index("image_id")["dx"].to_dict()
    assert dataset.skipped == ["ISIC_scc: labelled 'squamous cell carcinoma', not one of the model's classes"]


@pytest.mark.parametrize("name, code", [("AK", "akiec"), ("ACK", "akiec"), ("NEV", "nv"), ("SEK", "bkl"),
                                        ("MEL", "mel"), ("SCC", "scc")])
def test_other_collections_codes_name_class_folders(name, code):
    assert data.class_of_folder(name) == code          # ISIC 2019's and PAD-UFES-20's; SCC stays beyond the seven


def test_hams_own_class_names_name_folders_too(tmp_path, sample_meta):
    names = {"akiec": "Actinic_keratoses", "bcc": "Basal cell carcinoma", "bkl": "Benign keratosis-like lesions",
             "df": "Dermatofibroma", "mel": "Melanoma", "nv": "Melanocytic nevi", "vasc": "Vascular lesions"}
    for row in sample_meta.itertuples():
        (tmp_path / "ham" / names[row.dx]).mkdir(parents=True, exist_ok=True)
        shutil.copy(row.path, tmp_path / "ham" / names[row.dx] / f"{row.image_id}.jpg")
    assert data.load_dataset(tmp_path / "ham").counts() == {c: 10 for c in CLASS_CODES}


def test_an_unreadable_lesion_table_beside_class_folders_is_named(tmp_path, sample_meta):
    root = make_folder_dataset(tmp_path / "folders", sample_meta)
    (root / "lesions.csv").write_bytes(b"")          # an empty CSV: pandas raises EmptyDataError
    with pytest.raises(data.DatasetError, match="Cannot read lesions.csv"):
        data.load_dataset(root)


def test_fingerprint_changes_with_the_pixels(sample_meta):
    first = data.read_images(sample_meta.head(14), 32).fingerprint
    assert first == data.read_images(sample_meta.head(14), 32).fingerprint
    changed = sample_meta.head(14).copy()
    changed.loc[0, "path"] = sample_meta["path"][20]
    assert data.read_images(changed, 32).fingerprint != first


def test_class_folders_with_one_file_name_twice_are_refused(tmp_path, sample_meta):
    # the name is the image's id: two files called 1.jpg would share a row of the split and the lesion table
    root = make_folder_dataset(tmp_path / "folders", sample_meta)
    first = sample_meta.iloc[0]
    other = next(c for c in CLASS_CODES if c != first.dx)
    shutil.copy(first.path, root / other / f"{first.image_id}.jpg")
    with pytest.raises(data.DatasetError, match=rf"1 file names appear more than once: .*{first.image_id}\.jpg"):
        data.load_dataset(root)


def test_pad_ufes_20_is_refused_as_smartphone_photos_not_dermoscopy(tmp_path):
    """PAD-UFES-20's metadata.csv names its clinical photos by img_id with a diagnostic code; the message says
    why the model does not read them instead of listing the HAM10000 columns it lacks."""
    root = tmp_path / "PAD-UFES-20"
    (root / "images").mkdir(parents=True)
    photo = sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[0]
    (root / "images" / "PAT_46_881_939.png").write_bytes(photo.read_bytes())
    pd.DataFrame({"patient_id": ["PAT_46"], "lesion_id": [881], "age": [55], "gender": ["FEMALE"],
                  "region": ["FACE"], "diagnostic": ["BCC"], "img_id": ["PAT_46_881_939.png"],
                  "biopsed": [True]}).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(data.DatasetError, match="PAD-UFES-20's .*smartphone photos of the skin, not dermoscopy"):
        data.load_dataset(root, every_class=False, skip_other_labels=True)
