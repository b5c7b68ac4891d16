"""Two other clinics' public dermoscopy sets read as they are downloaded: Derm7pt's release (meta/meta.csv, photos
below images/) and PH2's (PH2_dataset.txt, one folder per photo), so the model can be evaluated on them as they come."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from skin_core import data, patients

DERM7PT_WORDS = {"mel": "melanoma (0.76 to 1.5 mm)", "nv": "clark nevus", "bcc": "basal cell carcinoma",
                 "bkl": "seborrheic keratosis", "df": "dermatofibroma", "vasc": "vascular lesion"}
DERM7PT_SITES = {"back": "back", "lower extremity": "lower limbs", "upper extremity": "upper limbs",
                 "face": "head neck", "abdomen": "abdomen", "chest": "chest", "trunk": "buttocks"}


def make_derm7pt_release(root: Path, meta: pd.DataFrame, *, other: str = "miscellaneous") -> Path:
    """The release as it is unpacked: each case's dermoscopy and clinical photo in a folder below images/, and
    meta/meta.csv naming both (akiec, which Derm7pt lacks, stands in as `other`)."""
    (root / "meta").mkdir(parents=True)
    rows = []
    for case, row in enumerate(meta.itertuples(), start=1):
        folder = root / "images" / f"F{case % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(row.path, folder / f"{row.image_id}.jpg")
        shutil.copy(row.path, folder / f"clinic{case:03d}.jpg")      # the same lesion's clinical photo
        rows.append({"case_num": case, "diagnosis": DERM7PT_WORDS.get(row.dx, other), "seven_point_score": 1,
                     "pigment_network": "typical", "streaks": "absent", "level_of_diagnostic_difficulty": "low",
                     "elevation": "flat", "location": DERM7PT_SITES.get(row.localization, "acral"), "sex": row.sex,
                     "clinic": f"F{case % 3}/clinic{case:03d}.jpg", "derm": f"F{case % 3}/{row.image_id}.jpg",
                     "management": "excision", "notes": None})
    pd.DataFrame(rows).to_csv(root / "meta" / "meta.csv", index=False)
    return root


def make_ph2_download(root: Path, meta: pd.DataFrame) -> Path:
    """PH2 as unpacked: a folder per photo holding its BMP and its lesion mask, and the `||` table of diagnoses
    (mel as 2, nv alternately as common 0 and atypical 1), with the legend the file ends with."""
    lines = ["||   Name   ||   Histological Diagnosis   ||   Clinical Diagnosis   ||   Asymmetry   ||   Colors   ||"]
    for n, row in enumerate(meta.itertuples()):
        name = f"IMD{n + 2:03d}"
        folder = root / "PH2 Dataset images" / name
        (folder / f"{name}_Dermoscopic_Image").mkdir(parents=True)
        (folder / f"{name}_lesion").mkdir()
        Image.open(row.path).save(folder / f"{name}_Dermoscopic_Image" / f"{name}.bmp")
        Image.new("L", (200, 150), 255).save(folder / f"{name}_lesion" / f"{name}_lesion.bmp")
        code = 2 if row.dx == "mel" else n % 2
        histology = "Melanoma" if row.dx == "mel" else ""
        lines.append(f"|| {name} ||   {histology:20s} ||                  {code} ||   0 | A | T  ||   3  4  ||")
    lines += ["", "Legends:", "Clinical Diagnosis: 0 - Common Nevus; 1 - Atypical Nevus; 2 - Melanoma."]
    (root / "PH2_dataset.txt").write_text("\n".join(lines) + "\n")
    return root


def test_a_derm7pt_release_is_read_in_ham10000_terms_from_its_dermoscopy_photos(tmp_path, sample_meta):
    meta = sample_meta[sample_meta["dx"] != "akiec"].reset_index(drop=True)
    root = make_derm7pt_release(tmp_path / "release_v0", meta)
    dataset = data.load_dataset(root, every_class=False)
    assert dataset.layout == "derm7pt"
    table = dataset.table.set_index("image_id")
    assert table["dx"].to_dict() == meta.set_index("image_id")["dx"].to_dict()     # clinical photos not read
    assert table["lesion_id"].nunique() == len(meta)                              # each case one lesion
    assert all(Path(path).parent.parent.name == "images" for path in table["path"])
    with pytest.raises(data.DatasetError, match="These classes have no images: akiec"):
        data.load_dataset(root)                      # no actinic keratoses: evaluated, not trained on alone


def test_derm7pt_gives_sex_and_body_site_in_ham10000_words(tmp_path, sample_meta):
    root = make_derm7pt_release(tmp_path / "release_v0", sample_meta)
    rows = patients.read(root, sample_meta["image_id"])
    assert rows["sex"].tolist() == sample_meta["sex"].tolist()
    encoded = patients.encode(rows)
    for ham, column in (("lower extremity", "site=lower extremity"), ("upper extremity", "site=upper extremity"),
                        ("back", "site=back")):
        chosen = (sample_meta["localization"] == ham).to_numpy()
        assert chosen.any() and encoded[chosen, patients.FEATURES.index(column)].all()
    face = (sample_meta["localization"] == "face").to_numpy()
    assert face.any() and encoded[face, patients.FEATURES.index("site=unknown")].all()   # "head neck" spans four
    assert rows["age"].isna().all()                                                     # Derm7pt records none


def test_derm7pt_diagnoses_beyond_the_seven_are_left_out_only_when_asked(tmp_path, sample_meta):
    root = make_derm7pt_release(tmp_path / "release_v0", sample_meta, other="lentigo")
    with pytest.raises(data.DatasetError, match=r"unknown dx values \['lentigo'\].*--skip-other-labels"):
        data.load_dataset(root, every_class=False)
    kept = data.load_dataset(root, every_class=False, skip_other_labels=True)
    assert len(kept.table) == (sample_meta["dx"] != "akiec").sum()
    assert all(reason.endswith("labelled 'lentigo', not one of the model's classes") for reason in kept.skipped)


def test_a_derm7pt_photo_not_unpacked_is_named(tmp_path, sample_meta):
    meta = sample_meta[sample_meta["dx"] != "akiec"].reset_index(drop=True)
    root = make_derm7pt_release(tmp_path / "release_v0", meta)
    lost = next((root / "images").rglob(f"{meta['image_id'][3]}.jpg"))
    lost.unlink()
    with pytest.raises(data.DatasetError, match=f"1 images listed in the metadata are missing: {meta['image_id'][3]}"):
        data.load_dataset(root, every_class=False)


def test_two_derm7pt_photos_of_one_name_in_two_folders_keep_ids_of_their_own(tmp_path, sample_meta):
    meta = sample_meta[sample_meta["dx"] == "nv"].head(3).reset_index(drop=True)
    root = make_derm7pt_release(tmp_path / "release_v0", meta)
    listed = pd.read_csv(root / "meta" / "meta.csv")
    first, second = Path(listed.loc[0, "derm"]), Path(listed.loc[1, "derm"])
    assert first.parent != second.parent
    (root / "images" / second).rename(root / "images" / second.parent / first.name)
    listed.loc[1, "derm"] = (second.parent / first.name).as_posix()
    listed.to_csv(root / "meta" / "meta.csv", index=False)
    table = data.load_dataset(root, every_class=False).table
    assert table["image_id"].tolist() == [f"{first.parent}_{first.stem}", f"{second.parent}_{first.stem}",
                                          meta["image_id"][2]]
    assert table["path"].map(lambda path: Path(path).is_file()).all()


def test_a_ph2_download_is_read_as_naevi_and_melanomas_from_its_dermoscopy_photos(tmp_path, sample_meta):
    meta = sample_meta[sample_meta["dx"].isin(["mel", "nv"])].reset_index(drop=True)
    root = make_ph2_download(tmp_path / "PH2Dataset", meta)
    dataset = data.load_dataset(root, every_class=False)
    assert dataset.layout == "ph2"
    assert dataset.table["dx"].tolist() == meta["dx"].tolist()          # atypical naevi (1) are nv too
    assert dataset.table["image_id"].tolist() == [f"IMD{n + 2:03d}" for n in range(len(meta))]
    assert dataset.table["lesion_id"].tolist() == [f"PH2 IMD{n + 2:03d}" for n in range(len(meta))]   # one each
    assert all(Path(path).name == f"{i}.bmp" for path, i in zip(dataset.table["path"], dataset.table["image_id"]))
    with pytest.raises(data.DatasetError, match="These classes have no images: akiec, bcc, bkl, df, vasc"):
        data.load_dataset(root)


def test_a_ph2_table_without_photo_rows_says_what_a_row_looks_like(tmp_path):
    root = tmp_path / "PH2Dataset"
    root.mkdir()
    (root / "PH2_dataset.txt").write_text("Name, Clinical Diagnosis\nIMD002, 0\n")
    with pytest.raises(data.DatasetError, match=r"PH2_dataset.txt lists no photos: expected rows such as"):
        data.load_dataset(root, every_class=False)


def test_evaluate_scores_derm7pt_and_ph2_as_they_come(tiny_patient_bundle, tmp_path, sample_meta):
    from skin_core.__main__ import main
    split = pd.read_csv(tiny_patient_bundle / "split.csv", dtype=str)
    unseen = sample_meta[sample_meta["image_id"].isin(split.loc[split["subset"] == "test", "image_id"])]
    meta = unseen[unseen["dx"].isin(DERM7PT_WORDS)].reset_index(drop=True)     # what it learnt from is left out
    derm = make_derm7pt_release(tmp_path / "derm7pt", meta)
    ph2 = make_ph2_download(tmp_path / "ph2", meta[meta["dx"].isin(["mel", "nv"])].reset_index(drop=True))
    reports = {}
    for root, n in ((derm, len(meta)), (ph2, int(meta["dx"].isin(["mel", "nv"]).sum()))):
        out = tmp_path / f"{root.name}.json"
        assert main(["evaluate", "--model", str(tiny_patient_bundle), "--data", str(root), "--json", str(out)]) == 0
        reports[root.name] = json.loads(out.read_text())
        assert reports[root.name]["n"] == n
    assert reports["derm7pt"]["patient_details"]["known"]["sex"] == 1     # Derm7pt's sex is used
    assert reports["ph2"]["patient_details"]["known"]["sex"] == 0         # PH2 records no patient details
    assert reports["ph2"]["lesions_named"] and reports["derm7pt"]["lesions_named"]   # one lesion a photo, by design
