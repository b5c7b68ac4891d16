"""The PH2 database (Mendonça et al., EMBC 2013; Hospital Pedro Hispano, Matosinhos) read in HAM10000's terms, so that
its download can be evaluated as it comes.

Its folder holds `PH2_dataset.txt`, a table drawn with `||` between columns, one row per photo: the photo's name
(`IMD002`), its histological diagnosis (mostly blank) and its clinical diagnosis as a number (0 common naevus, 1
atypical naevus, 2 melanoma), then the dermoscopic criteria. The photos are `PH2 Dataset images/IMD002/
IMD002_Dermoscopic_Image/IMD002.bmp`, beside masks with other names. Every photo is a lesion of its own
("PH2 IMD002"). PH2 holds naevi and melanomas only, so it can be evaluated but not trained on alone.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

TABLE = "PH2_dataset.txt"
CLINICAL_DIAGNOSES = {"0": "nv", "1": "nv", "2": "mel"}
"""PH2's clinical diagnosis codes in HAM10000's classes: common and atypical (dysplastic) naevi are both nv, as
HAM10000 and the ISIC archive count them."""


class Ph2FileError(ValueError):
    """A PH2_dataset.txt that is there but has no rows that can be read."""


def find(root: Path) -> Path | None:
    table = Path(root) / TABLE
    return table if table.is_file() else None


def read(root: Path, table: Path) -> pd.DataFrame:
    """image_id, lesion_id and dx for every photo the table lists; a clinical diagnosis other than 0, 1 or 2 stays
    as written, a label beyond the seven. The photos are then found by name below `root`, as HAM10000's are (the
    signature is every collection reader's)."""
    try:
        lines = table.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise Ph2FileError(f"Cannot read {table.name}: {exc.strerror or exc}.") from None
    rows = []
    for line in lines:
        fields = [field.strip() for field in line.split("||")]
        if len(fields) >= 4 and fields[1].upper().startswith("IMD"):   # the header and legend lines are not photos
            code = fields[3]
            rows.append((fields[1], CLINICAL_DIAGNOSES.get(code, f"clinical diagnosis {code or 'blank'}")))
    if not rows:
        raise Ph2FileError(f"{table.name} lists no photos: expected rows such as '|| IMD002 || ... || 0 || ...' "
                           "(name, histological diagnosis, clinical diagnosis 0, 1 or 2).")
    frame = pd.DataFrame(rows, columns=["image_id", "dx"])
    # one lesion per photo by the database's own account, so the lesion is named (an evaluation then does not
    # warn that photos of one lesion may be counted as independent)
    return frame.assign(lesion_id="PH2 " + frame["image_id"])[["image_id", "lesion_id", "dx"]]
