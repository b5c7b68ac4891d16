"""The patient's age, sex and body site: read from a dataset, encoded for the model, and the head that
turns them into a per-class push on the photo's logits.

A dermatologist reads a lesion knowing whose skin it is on and where: a pink scaly patch on an
80-year-old's face is more likely actinic than on a child's leg. HAM10000 records age, sex and body
site for nearly every photo; what they add to this project's models is measured in docs/experiments.md
(runs 39-42). Every field is optional: a missing one is encoded as "unknown",
which the model also learns (training hides each field at random), so a photo without them is
answered by the same model.

The head is additive: logits = photo logits + patient one-hot @ weights. It is trained jointly with the
network (training.py) and stored beside it in the bundle (`patients.json`), so the network file, its
Grad-CAM, export and feature space stay those of the photo alone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .jsonfiles import read_json_object

PATIENT_FILE = "patients.json"
COLUMNS = ("age", "sex", "localization")
UNKNOWN = "unknown"
AGE_BANDS = ((0, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 80), (80, 130))
SEXES = ("male", "female")
SITES = ("abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand", "lower extremity",
         "neck", "scalp", "trunk", "upper extremity")
"""HAM10000's body sites (its `localization` values, "unknown" aside)."""
OTHER_NAMES = {
    "sex": {"f": "female", "m": "male"},
    "localization": {"anterior torso": "trunk", "lateral torso": "trunk", "posterior torso": "back",
                     "palms/soles": "acral", "oral/genital": "genital",
                     "upper limbs": "upper extremity", "lower limbs": "lower extremity", "genital areas": "genital"},
}
"""Other collections' words for the same values: the ISIC archive's (e.g. ISIC 2019 and 2020) body sites, mapped
as the BCN20000/MSK photos the default learnt from were, and Derm7pt's; their "head/neck" ("head neck") spans
HAM10000's face, scalp, neck and ear, so it stays unknown, as it did in training (as do Derm7pt's buttocks)."""


def in_ham10000_words(field: str, value):
    """A sex or body site as HAM10000 writes it ("F" -> "female", "posterior torso" -> "back"); others as given."""
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    return OTHER_NAMES.get(field, {}).get(word, word)


def _age_name(band: tuple[int, int]) -> str:
    low, high = band
    return f"age={low}+" if high > 120 else f"age={low}-{high - 1}"


FEATURES = ([_age_name(b) for b in AGE_BANDS] + [f"age={UNKNOWN}"] + [f"sex={s}" for s in SEXES + (UNKNOWN,)]
            + [f"site={s}" for s in SITES + (UNKNOWN,)])
"""The one-hot columns, in order: each of the three groups ends with its "unknown" column."""
GROUPS = {"age": (0, len(AGE_BANDS) + 1),
          "sex": (len(AGE_BANDS) + 1, len(AGE_BANDS) + len(SEXES) + 2),
          "localization": (len(AGE_BANDS) + len(SEXES) + 2, len(FEATURES))}
"""Each field's [start, stop) columns in FEATURES."""


MIXING_REFUSAL = ("Label mixing blends two photos into one and cannot blend two patients' details: learning from "
                  "age, sex and body site needs label mixing off (--mix none).")


class PatientError(ValueError):
    """Patient details that cannot be used, with a message naming the field."""


def check(age=None, sex=None, site=None) -> dict:
    """One patient's details as given by a person (any of them None), checked; returns the row to encode."""
    if age is not None and age != "":
        try:
            age = float(age)
        except (TypeError, ValueError):
            raise PatientError(f"Age must be a number of years, got {age!r}.") from None
        if not 0 <= age <= 120:
            raise PatientError(f"Age must be between 0 and 120 years, got {age:g}.")
    else:
        age = None
    sex, site = in_ham10000_words("sex", sex), in_ham10000_words("localization", site)
    if sex not in (None, "", UNKNOWN) and sex not in SEXES:
        raise PatientError(f"Sex must be one of {', '.join(SEXES)} (or left out), got {sex!r}.")
    if site not in (None, "", UNKNOWN) and site not in SITES:
        raise PatientError(f"Body site must be one of {', '.join(SITES)} (or left out), got {site!r}.")
    given = lambda value: None if value in (None, "", UNKNOWN) else value   # noqa: E731
    return {"age": age, "sex": given(sex), "localization": given(site)}


def encode(rows: pd.DataFrame) -> np.ndarray:
    """One-hot rows (n, len(FEATURES)) from age, sex and localization columns; a blank, missing or
    unrecognised value is "unknown" (names beyond HAM10000's and OTHER_NAMES' are not guessed at)."""
    n = len(rows)
    out = np.zeros((n, len(FEATURES)), np.float32)
    age = pd.to_numeric(rows["age"], errors="coerce").to_numpy(float) if "age" in rows else np.full(n, np.nan)
    band = np.full(n, len(AGE_BANDS))
    for i, (low, high) in enumerate(AGE_BANDS):
        band[(age >= low) & (age < high)] = i
    out[np.arange(n), GROUPS["age"][0] + band] = 1
    for field, names in (("sex", SEXES), ("localization", SITES)):
        values = ([in_ham10000_words(field, v) for v in rows[field]] if field in rows else [None] * n)
        index = np.array([names.index(v) if v in names else len(names) for v in values])
        out[np.arange(n), GROUPS[field][0] + index] = 1
    return out


def unknown(n: int) -> np.ndarray:
    """n rows with every field unknown: what a photo without patient details is answered with."""
    return encode(pd.DataFrame({c: [None] * n for c in COLUMNS}))


def read(data_roots, image_ids) -> pd.DataFrame:
    """Age, sex and localization for `image_ids`, in their order, from the metadata file of the dataset (or of
    any of several datasets); rows or columns they lack (or a dataset without one, e.g. class folders) come
    back blank (NaN), i.e. unknown."""
    from .data import as_roots, details_of
    found = [details for details in map(details_of, as_roots(data_roots)) if details is not None]
    frame = pd.concat([pd.DataFrame(columns=["image_id"])] + found)
    rows = frame.drop_duplicates("image_id").set_index("image_id").reindex(list(image_ids))
    return rows.reindex(columns=list(COLUMNS)).reset_index(drop=True)


def read_known(data_roots, image_ids) -> tuple[pd.DataFrame, dict[str, float]]:
    """read() for a run that learns from the details, with each field's coverage; refused when none is known."""
    rows = read(data_roots, image_ids)
    known = coverage(rows)
    if not any(known.values()):
        from .data import as_roots
        names = " + ".join(root.name for root in as_roots(data_roots))
        raise PatientError(f"{names} records no age, sex or body site (a HAM10000 metadata CSV with "
                           "age, sex and localization columns does), so there is nothing to learn from them.")
    return rows, known


def coverage(rows: pd.DataFrame) -> dict[str, float]:
    """The share of rows with each field known: a dataset without them teaches the head nothing."""
    encoded = encode(rows)
    return {field: float(1 - encoded[:, stop - 1].mean()) if len(rows) else 0.0
            for field, (_, stop) in GROUPS.items()}


def unrecognised(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    """The values encode() reads as unknown although they are not blank, per field, with how many rows hold
    each (e.g. another collection's site names, "F" for female, an age in words): an evaluation on another
    dataset says so, since the model then answers those photos without that detail."""
    read_as_unknown = encode(rows)
    found = {}
    for field, (_, stop) in GROUPS.items():
        if field in rows:
            values = rows[field].reset_index(drop=True)
            given = values.notna() & ~values.astype(str).str.strip().isin(("", UNKNOWN))
            counts = values[given & (read_as_unknown[:, stop - 1] == 1)].astype(str).value_counts()
            if len(counts):
                found[field] = {str(value): int(n) for value, n in counts.items()}
    return found


@dataclass
class PatientHead:
    """The trained per-class weight of every one-hot column: (len(FEATURES), classes)."""
    weights: np.ndarray
    classes: list[str]

    def logits(self, rows: pd.DataFrame | None, n: int) -> np.ndarray:
        """The push on the photo logits for n photos (rows None: nothing known about any of them)."""
        encoded = unknown(n) if rows is None else encode(rows)
        if len(encoded) != n:
            raise PatientError(f"{len(encoded)} patient rows for {n} photos.")
        return encoded @ self.weights

    @classmethod
    def mean_of(cls, heads: list["PatientHead"]) -> "PatientHead":
        """The head of an ensemble whose logits are the mean of its networks' (model.ensemble_of)."""
        if any(head.classes != heads[0].classes for head in heads):
            raise PatientError("The patient heads answer different classes.")
        return cls(np.mean([head.weights for head in heads], axis=0), list(heads[0].classes))

    def save(self, path) -> None:
        Path(path).write_text(json.dumps({"features": FEATURES, "classes": self.classes,
                                          "weights": np.round(self.weights, 6).tolist()}, indent=1))

    @classmethod
    def load(cls, path) -> "PatientHead":
        stored = read_json_object(path)
        weights = np.asarray(stored["weights"], np.float32)
        if stored.get("features") != FEATURES or weights.shape != (len(FEATURES), len(stored["classes"])):
            raise PatientError(f"{Path(path).name} was written for other patient columns than this version reads.")
        return cls(weights, list(stored["classes"]))
