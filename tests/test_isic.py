"""An ISIC download read as it comes: one-hot labels (2018, 2019) or a diagnosis in words (2020, archive exports),
lesion ids and patient details in the download's own files, the images in a folder below."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import SAMPLE
from skin_core import data, evaluation, patients

ISIC_SITES = {"trunk": "anterior torso", "abdomen": "anterior torso", "chest": "anterior torso", "back": "posterior torso", "upper extremity": "upper extremity",
              "lower extremity": "lower extremity", "face": "head/neck", "scalp": "head/neck", "neck": "head/neck",
              "ear": "head/neck", "acral": "palms/soles", "foot": "lower extremity", "hand": "upper extremity"}


def make_isic_download(root: Path, meta: pd.DataFrame, *, year: int = 2019) -> Path:
    """Files named and laid out as the challenge's download: images in their own folder, the ground truth and
    the metadata (2019) or lesion groupings (2018) beside it."""
    images = root / f"ISIC_{year}_Training_Input"
    images.mkdir(parents=True)
    for row in meta.itertuples():
        shutil.copy(row.path, images / f"{row.image_id}.jpg")
    columns = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"] if year == 2019 else \
        ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    code = {"mel": "MEL", "nv": "NV", "bcc": "BCC", "akiec": "AK" if year == 2019 else "AKIEC", "bkl": "BKL",
            "df": "DF", "vasc": "VASC", "scc": "SCC"}
    truth = pd.DataFrame({"image": meta["image_id"]})
    for column in columns:
        truth[column] = [1.0 if code[dx] == column else 0.0 for dx in meta["dx"]]
    truth.to_csv(root / f"ISIC_{year}_Training_GroundTruth.csv", index=False)
    if year == 2019:
        pd.DataFrame({"image": meta["image_id"], "age_approx": meta["age"],
                      "anatom_site_general": meta["localization"].map(ISIC_SITES),
                      "lesion_id": meta["lesion_id"], "sex": meta["sex"]}) \
            .to_csv(root / "ISIC_2019_Training_Metadata.csv", index=False)
    else:
        pd.DataFrame({"image": meta["image_id"], "lesion_id": meta["lesion_id"], "diagnosis_confirm_type": "histo"}) \
            .to_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv", index=False)
    return root


@pytest.mark.parametrize("year", [2018, 2019])
def test_an_isic_download_is_read_in_ham10000_terms(tmp_path, sample_meta, year):
    root = make_isic_download(tmp_path / f"isic{year}", sample_meta, year=year)
    dataset = data.load_dataset(root)
    assert dataset.layout == "isic"
    table = dataset.table.set_index("image_id")
    expected = sample_meta.set_index("image_id")
    assert table["dx"].to_dict() == expected["dx"].to_dict()
    assert table["lesion_id"].to_dict() == expected["lesion_id"].to_dict()
    assert all(Path(path).is_file() for path in table["path"])


def test_an_isic_2019_download_gives_age_sex_and_body_site_in_ham10000_words(tmp_path, sample_meta):
    root = make_isic_download(tmp_path / "isic", sample_meta)
    rows = patients.read(root, sample_meta["image_id"])
    assert rows["age"].astype(float).tolist() == sample_meta["age"].astype(float).tolist()
    assert rows["sex"].tolist() == sample_meta["sex"].tolist()
    front = sample_meta["localization"].isin(["trunk", "abdomen", "chest"]).to_numpy()
    back = (sample_meta["localization"] == "back").to_numpy()
    assert front.any() and back.any()
    encoded = patients.encode(rows)
    assert encoded[front, patients.FEATURES.index("site=trunk")].all()      # ISIC's "anterior torso"
    assert encoded[back, patients.FEATURES.index("site=back")].all()        # and "posterior torso"
    assert set(patients.unrecognised(rows)) <= {"localization"}                   # head/neck has no single word
    assert set(patients.unrecognised(rows).get("localization", {})) <= {"head/neck"}


def test_scc_is_a_label_beyond_the_seven_and_a_row_without_one_diagnosis_is_named(tmp_path, sample_meta):
    meta = sample_meta.copy()
    meta.loc[0, "dx"] = "scc"
    root = make_isic_download(tmp_path / "isic", meta)
    with pytest.raises(data.DatasetError, match=r"unknown dx values \['scc'\].*--skip-other-labels"):
        data.load_dataset(root)
    kept = data.load_dataset(root, every_class=False, skip_other_labels=True)
    assert len(kept.table) == len(meta) - 1
    assert kept.skipped == [f"{meta['image_id'][0]}: labelled 'scc', not one of the model's classes"]

    truth = pd.read_csv(root / "ISIC_2019_Training_GroundTruth.csv")
    truth.loc[3, "NV"] = 1.0                                  # two diagnoses for one image
    truth.to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    with pytest.raises(data.DatasetError, match=f"1 rows of ISIC_2019_Training_GroundTruth.csv do not mark exactly "
                                                f"one class with 1 \\(first: {meta['image_id'][3]}\\)"):
        data.load_dataset(root, skip_other_labels=True)


WORDS = {"akiec": "actinic keratosis", "bcc": "basal cell carcinoma", "bkl": "seborrheic keratosis",
         "df": "dermatofibroma", "mel": "melanoma", "nv": "nevus", "vasc": "angioma"}


@pytest.mark.parametrize("kind", ["ISIC 2020", "archive export"])
def test_a_diagnosis_in_words_is_read_as_the_class_whose_definition_holds_it(tmp_path, sample_meta, kind):
    root = tmp_path / "download"
    (root / "images").mkdir(parents=True)
    for row in sample_meta.itertuples():
        shutil.copy(row.path, root / "images" / f"{row.image_id}.jpg")
    words = sample_meta["dx"].map(WORDS).tolist()
    words[0], words[1] = "squamous cell carcinoma", None           # beyond the seven, and not diagnosed
    if kind == "ISIC 2020":
        pd.DataFrame({"image_name": sample_meta["image_id"], "patient_id": "IP_1", "sex": sample_meta["sex"],
                      "age_approx": sample_meta["age"], "anatom_site_general_challenge": "posterior torso",
                      "diagnosis": words, "benign_malignant": "benign", "target": 0}).to_csv(root / "train.csv",
                                                                                              index=False)
    else:             # named like HAM10000's generic metadata file, but in the archive's columns
        pd.DataFrame({"isic_id": sample_meta["image_id"], "age_approx": sample_meta["age"],
                      "anatom_site_general": "posterior torso", "diagnosis": words,
                      "lesion_id": sample_meta["lesion_id"], "sex": sample_meta["sex"]}).to_csv(root / "metadata.csv",
                                                                                                index=False)
    with pytest.raises(data.DatasetError, match=r"unknown dx values \['squamous cell carcinoma', 'unknown'\]"):
        data.load_dataset(root)
    dataset = data.load_dataset(root, skip_other_labels=True, every_class=False)
    assert dataset.layout == "isic" and len(dataset.table) == len(sample_meta) - 2
    expected = sample_meta.set_index("image_id")["dx"].iloc[2:]
    assert dataset.table.set_index("image_id")["dx"].to_dict() == expected.to_dict()
    rows = patients.read(root, sample_meta["image_id"])
    assert (patients.encode(rows)[:, patients.FEATURES.index("site=back")] == 1).all()
    assert rows["sex"].tolist() == sample_meta["sex"].tolist()


def test_the_2019_test_metadata_without_lesion_ids_still_gives_the_details(tmp_path, sample_meta):
    root = make_isic_download(tmp_path / "isic", sample_meta)
    metadata = pd.read_csv(root / "ISIC_2019_Training_Metadata.csv").drop(columns=["lesion_id"])
    (root / "ISIC_2019_Training_Metadata.csv").unlink()
    metadata.to_csv(root / "ISIC_2019_Test_Metadata.csv", index=False)
    table = data.load_dataset(root).table
    assert (table["lesion_id"] == table["image_id"]).all()           # each image its own lesion
    assert patients.read(root, sample_meta["image_id"])["sex"].tolist() == sample_meta["sex"].tolist()


HIERARCHY = {"akiec": ("Malignant", "Malignant epidermal proliferations", "Solar or actinic keratosis", None),
             "bcc": ("Malignant", "Malignant adnexal epithelial proliferations - Follicular", "Basal cell carcinoma",
                     "Basal cell carcinoma, Nodular"),
             "bkl": ("Benign", "Benign epidermal proliferations", "Pigmented benign keratosis", None),
             "df": ("Benign", "Benign soft tissue proliferations - Fibro-histiocytic", "Dermatofibroma", None),
             "mel": ("Malignant", "Malignant melanocytic proliferations (Melanoma)", "Melanoma Invasive",
                     "Melanoma Invasive, Superficial spreading"),
             "nv": ("Benign", "Benign melanocytic proliferations", "Nevus", "Nevus, Spitz"),
             "vasc": ("Benign", "Benign soft tissue proliferations - Vascular", None, None)}
"""The archive's current export: HAM10000's own collection there leaves its vascular lesions' third level blank."""


def test_the_archives_hierarchy_of_diagnoses_is_read_at_its_most_specific_level(tmp_path, sample_meta):
    root = tmp_path / "export"
    (root / "images").mkdir(parents=True)
    for row in sample_meta.itertuples():
        shutil.copy(row.path, root / "images" / f"{row.image_id}.jpg")
    levels = [list(HIERARCHY[dx]) for dx in sample_meta["dx"]]
    levels[0] = ["Malignant", "Malignant epidermal proliferations", "Squamous cell carcinoma, NOS", None]
    levels[1] = ["Benign", "", "", ""]                                   # a benign lesion, diagnosed no further
    export = pd.DataFrame(levels, columns=["diagnosis_1", "diagnosis_2", "diagnosis_3", "diagnosis_4"])
    export.insert(0, "isic_id", sample_meta["image_id"])
    export["lesion_id"] = sample_meta["lesion_id"]
    export["sex"] = sample_meta["sex"]
    export.to_csv(root / "metadata.csv", index=False)
    assert set(sample_meta["dx"].iloc[2:]) == set(HIERARCHY)              # every class's words are read

    with pytest.raises(data.DatasetError, match=r"unknown dx values \['benign', 'squamous cell carcinoma, nos'\]"):
        data.load_dataset(root)
    dataset = data.load_dataset(root, skip_other_labels=True, every_class=False)
    expected = sample_meta.set_index("image_id")[["dx", "lesion_id"]].iloc[2:]
    assert dataset.table.set_index("image_id")[["dx", "lesion_id"]].to_dict() == expected.to_dict()
    assert patients.read(root, sample_meta["image_id"])["sex"].tolist() == sample_meta["sex"].tolist()


def test_an_archive_export_mixing_clinical_photos_with_dermoscopy_keeps_the_dermoscopy_only_when_asked(
        tmp_path, sample_meta):
    root = tmp_path / "export"
    (root / "images").mkdir(parents=True)
    for row in sample_meta.itertuples():
        shutil.copy(row.path, root / "images" / f"{row.image_id}.jpg")
    kinds = ["dermoscopic"] * len(sample_meta)
    kinds[:4] = ["clinical: close-up", "clinical: close-up", "TBP tile: close-up", None]  # the last: not said
    pd.DataFrame({"isic_id": sample_meta["image_id"], "diagnosis": sample_meta["dx"].map(WORDS),
                  "image_type": kinds, "lesion_id": sample_meta["lesion_id"]}).to_csv(root / "metadata.csv",
                                                                                       index=False)
    with pytest.raises(data.DatasetError, match=r"3 images are not dermoscopy by the download's image_type "
                                                r"\(2 clinical: close-up, 1 TBP tile: close-up\).*--skip-other-labels"):
        data.load_dataset(root)
    dataset = data.load_dataset(root, skip_other_labels=True, every_class=False)
    ids = sample_meta["image_id"]
    assert dataset.table["image_id"].tolist() == ids.iloc[3:].tolist()
    assert dataset.skipped == [f"{ids[0]}: not dermoscopy (clinical: close-up)",
                               f"{ids[1]}: not dermoscopy (clinical: close-up)",
                               f"{ids[2]}: not dermoscopy (TBP tile: close-up)"]
    notes = evaluation.other_dataset_notes({"skipped": dataset.skipped, "left_out_seen": 0})     # as a report says
    assert "Left out as asked: 2 images not dermoscopy (clinical: close-up), 1 image not dermoscopy (TBP tile: " \
           "close-up)." in notes
    assert list(dataset.table.columns) == list(data.load_dataset(SAMPLE).table.columns)


def test_an_archive_export_of_clinical_photos_only_says_so_even_when_told_to_leave_them_out(tmp_path, sample_meta):
    root = tmp_path / "export"
    (root / "images").mkdir(parents=True)
    meta = sample_meta.head(3)
    for row in meta.itertuples():
        shutil.copy(row.path, root / "images" / f"{row.image_id}.jpg")
    pd.DataFrame({"isic_id": meta["image_id"], "diagnosis": meta["dx"].map(WORDS),
                  "image_type": "clinical: close-up"}).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(data.DatasetError, match=r"None of the 3 images is dermoscopy by the download's image_type "
                                                r"\(3 clinical: close-up\); the model reads dermoscopic photos only"):
        data.load_dataset(root, skip_other_labels=True, every_class=False)


def test_an_archive_export_without_any_diagnosis_is_refused_with_what_is_read(tmp_path, sample_meta):
    root = tmp_path / "export"
    (root / "images").mkdir(parents=True)
    shutil.copy(sample_meta["path"][0], root / "images" / f"{sample_meta['image_id'][0]}.jpg")
    pd.DataFrame({"isic_id": [sample_meta["image_id"][0]], "age_approx": [50]}).to_csv(root / "metadata.csv",
                                                                                        index=False)
    with pytest.raises(data.DatasetError, match=r"metadata.csv lacks the columns \['dx', 'image_id'\].*isic_id "
                                                r"\(or image\) and diagnosis \(or diagnosis_1 to diagnosis_5\) "
                                                r"columns"):
        data.load_dataset(root)


def test_a_folder_without_any_known_label_file_says_which_it_looked_for(tmp_path, sample_meta):
    (tmp_path / "photos").mkdir()
    shutil.copy(sample_meta["path"][0], tmp_path / "photos" / "a.jpg")
    with pytest.raises(data.DatasetError, match="an ISIC ground-truth or metadata CSV"):
        data.load_dataset(tmp_path / "photos")


def test_evaluate_scores_an_isic_download_with_its_patient_details(tiny_patient_bundle, tmp_path, sample_meta,
                                                                   capsys):
    from skin_core.__main__ import main
    split = pd.read_csv(tiny_patient_bundle / "split.csv", dtype=str)
    unseen = sample_meta[sample_meta["image_id"].isin(split.loc[split["subset"] == "test", "image_id"])]
    root = make_isic_download(tmp_path / "isic", unseen.reset_index(drop=True))
    assert main(["evaluate", "--model", str(tiny_patient_bundle), "--data", str(root),
                 "--json", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["n"] == len(unseen)
    known = report["patient_details"]["known"]
    assert known["age"] == pytest.approx(unseen["age"].notna().mean())
    assert known["sex"] == pytest.approx(unseen["sex"].isin(patients.SEXES).mean())


def test_training_on_an_isic_download_as_it_comes_leaves_out_its_scc_only_when_asked(tmp_path, sample_meta):
    from skin_core.progress import ProgressLog
    from skin_core.training import TrainConfig, prepare
    meta = sample_meta.copy()
    meta.loc[0, "dx"] = "scc"                              # ISIC 2019's training download holds 628 of them
    root = make_isic_download(tmp_path / "isic", meta)
    settings = dict(data=str(root), out=str(tmp_path / "run"), img_size=32, test_fraction=0.2, val_fraction=0.2,
                    workers=2)
    with pytest.raises(data.DatasetError, match=r"unknown dx values \['scc'\].*Training or an evaluation can be "
                                                r"told to leave them out \(--skip-other-labels\)"):
        prepare(TrainConfig(**settings), ProgressLog(None))
    prep = prepare(TrainConfig(**settings, skip_other_labels=True), ProgressLog(None))
    assert meta["image_id"][0] not in set(prep.dataset.table["image_id"])
    assert len(prep.dataset.table) == len(meta) - 1
    assert prep.dataset.skipped == [f"{meta['image_id'][0]}: labelled 'scc', not one of the model's classes"]


MILK_CODES = ["AKIEC", "BCC", "BEN_OTH", "BKL", "DF", "INF", "MAL_OTH", "MEL", "NV", "SCCKA", "VASC"]


def test_a_ground_truth_by_lesion_labels_the_images_its_metadata_lists_as_milk10k_gives_them(tmp_path, sample_meta):
    """MILK10k: one-hot labels per lesion_id; the metadata lists each lesion's dermoscopic and clinical photos."""
    root = tmp_path / "milk"
    lesions = sample_meta.drop_duplicates("lesion_id").reset_index(drop=True)
    rows = []
    for row in sample_meta.itertuples():
        folder = root / "MILK10k_Training_Input" / row.lesion_id
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(row.path, folder / f"{row.image_id}.jpg")
        rows.append({"lesion_id": row.lesion_id, "isic_id": row.image_id, "image_type": "dermoscopic",
                     "age_approx": row.age, "sex": row.sex})
    close_up = lesions["lesion_id"][1]                               # and a clinical photo of one lesion
    shutil.copy(lesions["path"][1], root / "MILK10k_Training_Input" / close_up / "ISIC_9999999.jpg")
    rows.append({"lesion_id": close_up, "isic_id": "ISIC_9999999", "image_type": "clinical: close-up"})
    pd.DataFrame(rows).to_csv(root / "MILK10k_Training_Metadata.csv", index=False)
    codes = lesions["dx"].str.upper().tolist()
    codes[0] = "SCCKA"                                               # beyond the seven
    truth = pd.DataFrame({"lesion_id": lesions["lesion_id"]})
    for code in MILK_CODES:
        truth[code] = [1.0 if c == code else 0.0 for c in codes]
    truth.to_csv(root / "MILK10k_Training_GroundTruth.csv", index=False)

    with pytest.raises(data.DatasetError, match="1 image is not dermoscopy by the download's image_type"):
        data.load_dataset(root)
    dataset = data.load_dataset(root, skip_other_labels=True, every_class=False)
    assert dataset.layout == "isic"
    first = sample_meta["lesion_id"] == lesions["lesion_id"][0]
    expected = sample_meta[~first].set_index("image_id")[["dx", "lesion_id"]]
    assert dataset.table.set_index("image_id")[["dx", "lesion_id"]].sort_index().to_dict() == \
        expected.sort_index().to_dict()
    assert "ISIC_9999999: not dermoscopy (clinical: close-up)" in dataset.skipped
    assert sum("labelled 'scc or keratoacanthoma'" in s for s in dataset.skipped) == first.sum()
    assert patients.read(root, sample_meta["image_id"])["sex"].tolist() == sample_meta["sex"].tolist()

    (root / "MILK10k_Training_Metadata.csv").unlink()                # the images of the lesions unknown
    with pytest.raises(data.DatasetError, match="labels lesions, not images: a metadata CSV beside it must list"):
        data.load_dataset(root, skip_other_labels=True)
