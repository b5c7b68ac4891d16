"""The ISIC challenges' own files read in HAM10000's terms, so that a download of ISIC 2018 (task 3) or ISIC 2019
can be evaluated or trained on as it comes, without rewriting its labels.

Those downloads label each image by one-hot columns (`image,MEL,NV,BCC,AKIEC,BKL,DF,VASC` in 2018;
`image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK` in 2019) and keep lesion ids, age, sex and body site in another file
(2019's `ISIC_2019_Training_Metadata.csv`: image, age_approx, anatom_site_general, lesion_id, sex; 2018's
`..._LesionGroupings.csv`: image, lesion_id). They become HAM10000's columns: image_id, lesion_id, dx, age, sex,
localization. AK and AKIEC are HAM10000's akiec; SCC and UNK stay what they are, labels beyond the model's
seven, which an evaluation leaves out only when asked (HAM10000's akiec holds intraepithelial carcinoma, not
invasive squamous cell carcinoma). Sex and body-site words are mapped later, as for any dataset
(patients.in_ham10000_words).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

IMAGE_COLUMN = "image"
ONE_HOT = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "AKIEC": "akiec", "BKL": "bkl", "DF": "df",
           "VASC": "vasc", "SCC": "scc", "UNK": "unk"}
"""Each challenge column and the label it becomes."""
DETAILS = {"image": "image_id", "lesion_id": "lesion_id", "age_approx": "age", "sex": "sex",
           "anatom_site_general": "localization"}
"""The metadata file's columns and the HAM10000 columns they fill."""


class IsicFileError(ValueError):
    """A challenge file that is there but cannot be read as one."""


def _header(csv: Path) -> list[str]:
    try:
        return list(pd.read_csv(csv, nrows=0).columns)
    except Exception:             # not a CSV at all (or not one of these): another layout may still apply
        return []


def find_ground_truth(root: Path) -> Path | None:
    """The first CSV in `root` whose header is an image column and at least five of the challenge's classes."""
    for csv in sorted(Path(root).glob("*.csv")):
        header = _header(csv)
        if IMAGE_COLUMN in header and sum(column in ONE_HOT for column in header) >= 5:
            return csv
    return None


def _details_file(root: Path) -> Path | None:
    """The CSV beside the ground truth that gives lesion ids (and in 2019 age, sex and body site) by image."""
    for csv in sorted(Path(root).glob("*.csv")):
        header = _header(csv)
        if IMAGE_COLUMN in header and "lesion_id" in header and not any(column in ONE_HOT for column in header):
            return csv
    return None


def read(root: Path, ground_truth: Path) -> pd.DataFrame:
    """image_id, lesion_id, dx, age, sex, localization for every row of the ground truth (blank where the
    download does not say; an image without a lesion id is its own lesion, as in data._read_ham10000)."""
    try:
        truth = pd.read_csv(ground_truth, dtype={IMAGE_COLUMN: str})
        classes = [column for column in truth.columns if column in ONE_HOT]
        scores = truth[classes].apply(pd.to_numeric, errors="coerce")
    except Exception as exc:
        raise IsicFileError(f"Cannot read {ground_truth.name}: {exc}") from None
    labelled = (scores == 1).sum(axis=1)
    if (labelled != 1).any():
        rows = truth.loc[labelled != 1, IMAGE_COLUMN].head(5).tolist()
        raise IsicFileError(f"{int((labelled != 1).sum())} rows of {ground_truth.name} do not mark exactly one "
                            f"class with 1 (first: {', '.join(map(str, rows))}); each image needs one diagnosis.")
    frame = pd.DataFrame({"image_id": truth[IMAGE_COLUMN].str.strip(),
                          "dx": scores.idxmax(axis=1).map(ONE_HOT)})
    details = _details_file(root)
    if details is not None:
        try:
            extra = pd.read_csv(details, dtype=str)
        except Exception as exc:
            raise IsicFileError(f"Cannot read {details.name}: {exc}") from None
        extra = extra[[c for c in DETAILS if c in extra]].rename(columns=DETAILS).drop_duplicates("image_id")
        frame = frame.merge(extra, on="image_id", how="left")
    return frame.reindex(columns=["image_id", "lesion_id", "dx", "age", "sex", "localization"])
