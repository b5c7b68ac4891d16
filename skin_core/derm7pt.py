"""The seven-point checklist dataset (Derm7pt; Kawahara et al., IEEE JBHI 23(2), 2019) read in HAM10000's terms, so
that its release can be evaluated or trained on as it comes.

Its release folder holds `meta/meta.csv`, one row per case (one lesion): a `diagnosis` in words, the dermoscopy
photo's path below `images/` (`derm`), the clinical photo's (`clinic`), `sex` and body site (`location`). Only the
dermoscopy photo is read: the model was made for dermoscopy, and the clinical photo of the same lesion is another
kind of picture. A case's lesion id is its case number, so its photo cannot fall on both sides of a split.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import isic

META = Path("meta") / "meta.csv"
IMAGES = "images"
NEEDED = {"diagnosis", "derm"}
DIAGNOSES = {"basal cell carcinoma": "bcc",
             "blue nevus": "nv", "clark nevus": "nv", "combined nevus": "nv", "congenital nevus": "nv",
             "dermal nevus": "nv", "recurrent nevus": "nv", "reed or spitz nevus": "nv",
             "melanoma": "mel", "melanoma (in situ)": "mel", "melanoma (less than 0.76 mm)": "mel",
             "melanoma (0.76 to 1.5 mm)": "mel", "melanoma (more than 1.5 mm)": "mel", "melanoma metastasis": "mel",
             "seborrheic keratosis": "bkl", "dermatofibroma": "df", "vascular lesion": "vasc"}
"""Derm7pt's diagnoses that HAM10000's classes hold (its naevi of every kind are nv, its melanomas of every depth
mel). Its "lentigo" does not say solar lentigo (bkl) or lentigo simplex (a melanocytic lesion), and "melanosis" and
"miscellaneous" are none of the seven: they stay labels beyond them, which training and an evaluation leave out
only when asked."""


class Derm7ptFileError(ValueError):
    """A meta.csv that is there but cannot be read as Derm7pt's."""


def find(root: Path) -> Path | None:
    """The release's meta.csv if `root` is a Derm7pt release folder (meta/meta.csv with diagnosis and derm)."""
    meta = Path(root) / META
    if not meta.is_file():
        return None
    try:
        header = set(pd.read_csv(meta, nrows=0).columns)
    except Exception:           # not a CSV: another layout may still apply
        return None
    return meta if NEEDED <= header else None


def read(root: Path, meta: Path) -> pd.DataFrame:
    """image_id, lesion_id, dx, sex, localization and path (blank where the file is not there) for every case's
    dermoscopy photo; the image id is the photo's file name without its extension, as for any other layout (with its
    folder where two folders hold the same name)."""
    try:
        frame = pd.read_csv(meta, dtype=str)
    except Exception as exc:
        raise Derm7ptFileError(f"Cannot read {meta.name}: {exc}") from None
    photos = frame["derm"].fillna("").str.strip().str.replace("\\", "/")     # as written on Windows too
    if (photos == "").any():
        rows = (frame.index[photos == ""] + 2).tolist()[:5]
        raise Derm7ptFileError(f"{int((photos == '').sum())} rows of {meta.name} name no dermoscopy photo (derm): "
                               f"rows {', '.join(map(str, rows))}.")
    paths = [Path(root) / IMAGES / photo for photo in photos]
    stems = pd.Series([path.stem for path in paths])
    named_twice = stems.duplicated(keep=False)        # two folders may hold a file of the same name
    ids = stems.where(~named_twice, [str(Path(photo).with_suffix("")).replace("/", "_") for photo in photos])
    cases = frame["case_num"] if "case_num" in frame else pd.Series(frame.index + 1, dtype=str)
    return pd.DataFrame({
        "image_id": ids,
        "lesion_id": "derm7pt-case-" + cases.astype(str).str.strip(),
        "dx": in_ham10000_terms(frame["diagnosis"]),
        "sex": frame.get("sex"),
        "localization": frame.get("location"),
        "path": [str(path) if path.is_file() else None for path in paths],
    })


def in_ham10000_terms(diagnoses: pd.Series) -> pd.Series:
    """HAM10000's class for each diagnosis DIAGNOSES holds, else the words in lower case ("unknown" for a blank)."""
    words = isic.diagnosis_words(diagnoses)
    return words.map(DIAGNOSES).fillna(words)
