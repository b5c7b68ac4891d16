"""The ISIC challenges' and archive's own files read in HAM10000's terms, so that a download can be evaluated or
trained on as it comes, without rewriting its labels.

Two kinds of label file are read:
- one-hot columns, as ISIC 2018 task 3 (`image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`) and ISIC 2019
  (`image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK`) give them, with lesion ids, age, sex and body site in another file
  (2019's `..._Metadata.csv`: image, age_approx, anatom_site_general, lesion_id, sex; 2018's
  `..._LesionGroupings.csv`: image, lesion_id); or by lesion, as MILK10k gives them (`lesion_id,AKIEC,BCC,...`),
  the metadata file then listing each lesion's images (isic_id, lesion_id, image_type, ...);
- a diagnosis in words, details in the same file: one `diagnosis` column, as ISIC 2020 (`image_name`, ...,
  `anatom_site_general_challenge`, `diagnosis`) and the archive's older exports (`isic_id`, ..., `diagnosis`,
  `lesion_id`) give it, or the archive's current hierarchy, `diagnosis_1` (Benign, Malignant, Indeterminate) to
  `diagnosis_5`, each level more specific than the one before (e.g. "Benign melanocytic proliferations",
  "Nevus", "Nevus, Spitz").
They become HAM10000's columns: image_id, lesion_id, dx, age, sex, localization. The most specific diagnosis given
decides, and it is one of the seven only where HAM10000's own definition of that class holds it (DIAGNOSES; a
subtype named after its type, "Nevus, Spitz", is read as that type). Anything else (squamous cell carcinoma, which
HAM10000's akiec holds only in situ; lentigo NOS; unknown or blank) stays a label beyond the model's seven, which
training and an evaluation leave out only when asked, as they do an export's photos that are not dermoscopy
(`image_type`: clinical photos, total-body tiles). Sex and body-site words are mapped later, as for any dataset
(patients.in_ham10000_words).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

IMAGE_COLUMNS = ("image", "image_name", "isic_id")
ONE_HOT = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "AKIEC": "akiec", "BKL": "bkl", "DF": "df",
           "VASC": "vasc", "SCC": "scc", "UNK": "unk", "SCCKA": "scc or keratoacanthoma",
           "BEN_OTH": "other benign", "MAL_OTH": "other malignant", "INF": "inflammatory"}
"""Each one-hot column and the label it becomes (MILK10k's AKIEC is HAM10000's: actinic keratosis and
intraepidermal carcinoma; its SCCKA, BEN_OTH, MAL_OTH and INF stay beyond the seven)."""
DIAGNOSIS_COLUMN = "diagnosis"
DIAGNOSIS_LEVELS = ("diagnosis_1", "diagnosis_2", "diagnosis_3", "diagnosis_4", "diagnosis_5")
"""The archive's hierarchy, most general first."""
DIAGNOSES = {"melanoma": "mel", "melanoma invasive": "mel", "melanoma in situ": "mel", "melanoma metastasis": "mel",
             "nevus": "nv", "blue nevus": "nv", "basal cell carcinoma": "bcc",
             "actinic keratosis": "akiec", "solar or actinic keratosis": "akiec",
             "squamous cell carcinoma in situ": "akiec",
             "seborrheic keratosis": "bkl", "solar lentigo": "bkl", "lichenoid keratosis": "bkl",
             "lichen planus like keratosis": "bkl", "pigmented benign keratosis": "bkl", "dermatofibroma": "df",
             "vascular lesion": "vasc", "angioma": "vasc", "hemangioma": "vasc", "angiokeratoma": "vasc",
             "pyogenic granuloma": "vasc", "hemorrhage": "vasc",
             "benign soft tissue proliferations - vascular": "vasc"}
"""The archive's diagnoses (lower case, up to a first comma) that HAM10000's classes hold (Tschandl et al. 2018:
melanoma in all its variants, in situ included; benign keratosis-like lesions are solar lentigines, seborrheic
keratoses and lichen-planus like keratoses; vascular lesions are angiomas, angiokeratomas, pyogenic granulomas and
haemorrhage; akiec is actinic keratosis and intraepithelial carcinoma, Bowen's disease). Melanoma metastases are
melanoma, as ISIC 2019's MEL column counts them. "Squamous cell carcinoma, NOS" is not read as akiec, since it
does not say in situ: the archive files HAM10000's own Bowen's disease under it, which a HAM10000 download from the
Dataverse labels akiec."""
DETAILS = {"lesion_id": "lesion_id", "age_approx": "age", "sex": "sex", "anatom_site_general": "localization",
           "anatom_site_general_challenge": "localization", "image_type": "image_type"}
"""The files' detail columns and the columns they fill (HAM10000's, and the archive's kind of photo)."""
DERMOSCOPIC = "dermoscopic"
"""The archive's image_type of a dermoscopy photo; its others ("clinical: close-up", "TBP tile: overview", ...) are
photos of another kind, which the model was not made for."""


class IsicFileError(ValueError):
    """A label file that is there but cannot be read as one."""


def _header(csv: Path) -> list[str]:
    try:
        return list(pd.read_csv(csv, nrows=0).columns)
    except Exception:             # not a CSV at all (or not one of these): another layout may still apply
        return []


def _image_column(header: list[str]) -> str | None:
    return next((column for column in IMAGE_COLUMNS if column in header), None)


def _diagnosis_in_words(header: list[str]) -> bool:
    return DIAGNOSIS_COLUMN in header or any(level in header for level in DIAGNOSIS_LEVELS)


def _labels_in(header: list[str]) -> bool:
    return _diagnosis_in_words(header) or sum(column in ONE_HOT for column in header) >= 5


def find_ground_truth(root: Path) -> Path | None:
    """The first CSV in `root` that labels images: an image column, and one-hot classes or a diagnosis column; or
    one that labels lesions (MILK10k: lesion_id and one-hot classes, its images listed in a metadata CSV)."""
    for csv in sorted(Path(root).glob("*.csv")):
        header = _header(csv)
        if (_image_column(header) or "lesion_id" in header) and _labels_in(header):
            return csv
    return None


def _details_file(root: Path) -> Path | None:
    """A CSV beside a one-hot ground truth that gives lesion ids or patient details by image (not labels)."""
    for csv in sorted(Path(root).glob("*.csv")):
        header = _header(csv)
        if _image_column(header) and not _labels_in(header) and any(column in DETAILS for column in header):
            return csv
    return None


def _read(csv: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(csv, dtype=str)
    except Exception as exc:
        raise IsicFileError(f"Cannot read {csv.name}: {exc}") from None
    return frame.rename(columns={_image_column(list(frame.columns)): "image_id"})


def _one_hot_labels(truth: pd.DataFrame, name: str, key: str = "image_id") -> pd.Series:
    classes = [column for column in truth.columns if column in ONE_HOT]
    scores = truth[classes].apply(pd.to_numeric, errors="coerce")
    labelled = (scores == 1).sum(axis=1)
    if (labelled != 1).any():
        rows = truth.loc[labelled != 1, key].head(5).tolist()
        raise IsicFileError(f"{int((labelled != 1).sum())} rows of {name} do not mark exactly one class with 1 "
                            f"(first: {', '.join(map(str, rows))}); each {'image' if key == 'image_id' else 'lesion'} "
                            "needs one diagnosis.")
    return scores.idxmax(axis=1).map(ONE_HOT)


def _by_lesion(root: Path, truth: pd.DataFrame, name: str) -> pd.DataFrame:
    """A ground truth of lesions (MILK10k's) given to each image its metadata CSV lists under that lesion."""
    details = _details_file(root)
    if details is None:
        raise IsicFileError(f"{name} labels lesions, not images: a metadata CSV beside it must list each lesion's "
                            "images (isic_id or image, and lesion_id).")
    images = _details(_read(details))
    if "lesion_id" not in images:
        raise IsicFileError(f"{details.name} has no lesion_id column to find the images of {name}'s lesions.")
    labels = pd.DataFrame({"lesion_id": truth["lesion_id"].str.strip(),
                           "dx": _one_hot_labels(truth, name, key="lesion_id")})
    images["lesion_id"] = images["lesion_id"].str.strip()
    return images.merge(labels, on="lesion_id", how="left")


def _most_specific_diagnosis(truth: pd.DataFrame) -> pd.Series:
    """Each row's diagnosis in words: the `diagnosis` column, or the most specific level of the hierarchy given."""
    if DIAGNOSIS_COLUMN in truth:
        return truth[DIAGNOSIS_COLUMN]
    levels = truth[[level for level in DIAGNOSIS_LEVELS if level in truth]].apply(lambda column: column.str.strip())
    return levels.where(levels != "").ffill(axis=1).iloc[:, -1]


def diagnosis_words(diagnoses: pd.Series) -> pd.Series:
    """Diagnoses in words as a collection writes them, in lower case without surrounding spaces ("unknown" for a
    blank): what a collection's table of diagnoses is looked up with."""
    return diagnoses.fillna("unknown").astype(str).str.strip().str.lower().replace("", "unknown")


def in_ham10000_terms(diagnoses: pd.Series) -> pd.Series:
    """HAM10000's class for each diagnosis in words that one holds (DIAGNOSES), else the words in lower case
    ("unknown" for a blank), which stay beyond the seven."""
    words = diagnosis_words(diagnoses)
    return words.map(DIAGNOSES).fillna(words.str.split(",").str[0].str.strip().map(DIAGNOSES)).fillna(words)


def _details(frame: pd.DataFrame) -> pd.DataFrame:
    present = {column: name for column, name in DETAILS.items() if column in frame}
    return frame[["image_id", *present]].rename(columns=present)


def read(root: Path, ground_truth: Path) -> pd.DataFrame:
    """image_id, lesion_id, dx, age, sex, localization (and the archive's image_type) for every image the label file
    labels (blank where the download does not say; an image without a lesion id is its own lesion, as in
    data._read_ham10000)."""
    truth = _read(ground_truth)
    if "image_id" not in truth:                      # labels by lesion
        frame = _by_lesion(root, truth, ground_truth.name)
    elif _diagnosis_in_words(list(truth.columns)):
        frame = _details(truth.assign(image_id=truth["image_id"].str.strip())) \
            .assign(dx=in_ham10000_terms(_most_specific_diagnosis(truth)))
    else:
        frame = pd.DataFrame({"image_id": truth["image_id"].str.strip(),
                              "dx": _one_hot_labels(truth, ground_truth.name)})
        details = _details_file(root)
        if details is not None:
            frame = frame.merge(_details(_read(details)).drop_duplicates("image_id"), on="image_id", how="left")
    columns = ["image_id", "lesion_id", "dx", "age", "sex", "localization"]
    return frame.reindex(columns=columns + (["image_type"] if "image_type" in frame else []))


def not_dermoscopic(image_types: pd.Series) -> pd.Series:
    """Whether each photo is, by the archive's image_type, of another kind than dermoscopy (blank: not said, and
    read as dermoscopy, as in exports from before the archive recorded it)."""
    words = image_types.fillna("").astype(str).str.strip().str.lower()
    return (words != "") & ~words.str.startswith(DERMOSCOPIC)
