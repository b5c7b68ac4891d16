"""Reading a labelled dataset and checking it.

Five layouts are understood and detected automatically:
- HAM10000: a metadata CSV (lesion_id, image_id, dx, ...) and `<image_id>.jpg` files anywhere below;
- an ISIC download: ISIC 2018 (task 3) or 2019's one-hot ground-truth CSV with its metadata or lesion groupings
  beside it, MILK10k's one-hot labels by lesion with its metadata, or ISIC 2020's or the archive's CSV with a
  diagnosis in words, and the images anywhere below (read in HAM10000's terms by `isic`);
- Derm7pt's release (`meta/meta.csv`, its dermoscopy photos below `images/`) and PH2's download
  (`PH2_dataset.txt`, the photos below), read in HAM10000's terms by `derm7pt` and `ph2`;
- one sub-folder per class, named by its code (`akiec/`, `MEL/`) or in words (`melanoma/`, `Melanocytic nevi/`,
  `seborrheic keratosis/`, as collections shared online name them); each image is its own lesion unless a CSV
  with image_id and lesion_id columns sits beside the class folders.
The result is always the same table: path, image_id, lesion_id, dx, source (the dataset folder's name).
Several datasets can be read as one (`load_datasets`): each image keeps its source, so that `splits` can split
within each source.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import derm7pt, images, isic, ph2
from .classes import CLASS_CODES, CLASSES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
METADATA_NAMES = ("HAM10000_metadata.csv", "metadata.csv")
SHOW = 5  # how many offending rows or files an error names
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"   # the small real sample that ships with the code
SMARTPHONE_COLUMNS = {"img_id", "diagnostic"}
"""PAD-UFES-20's metadata.csv (Pacheco et al. 2020): clinical photos taken with smartphones, which this model
is not for; recognised so that it is refused for that reason rather than for its column names."""


FOLDER_NAMES = {lesion.name.lower(): lesion.code for lesion in CLASSES} | {
    "actinic keratoses": "akiec", "benign keratosis": "bkl", "benign keratosis-like lesions": "bkl",
    "melanocytic nevi": "nv", "melanocytic naevi": "nv", "nevi": "nv", "naevus": "nv", "naevi": "nv",
    "vascular lesions": "vasc", "ak": "akiec", "ack": "akiec", "nev": "nv", "sek": "bkl"}
"""Class folders' other names: the classes in words as collections shared online write them (HAM10000's own
plural names, British spellings) and other collections' codes (ISIC 2019's AK; PAD-UFES-20's ACK, NEV, SEK);
single diagnoses in words ("melanoma", "seborrheic keratosis") are read as an ISIC export's (isic.DIAGNOSES)."""


class DatasetError(ValueError):
    """A dataset we cannot use, with a message naming the problem and the first offenders."""


@dataclass
class Dataset:
    root: Path
    layout: str                # "ham10000", "isic", "derm7pt", "ph2" or "folders" ("ham10000+folders"... for several)
    table: pd.DataFrame        # path, image_id, lesion_id, dx, source
    skipped: list[str]         # files left out by skip_bad, with the reason

    def counts(self) -> dict[str, int]:
        return {c: int(n) for c, n in self.table["dx"].value_counts().reindex(CLASS_CODES, fill_value=0).items()}


def first_few(items, n=SHOW) -> str:
    """The first few of `items` for a message, and how many more there are."""
    items = list(items)
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return ", ".join(str(i) for i in items[:n]) + more


def find_metadata(root: Path) -> Path | None:
    for name in METADATA_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def details_of(root: Path) -> pd.DataFrame | None:
    """A dataset's rows by image_id with whatever age, sex and localization its label files give (HAM10000's
    metadata CSV, or an ISIC download's metadata in those terms); None for a layout without them."""
    metadata = find_metadata(root)
    if metadata is not None and "image_id" in _columns(metadata):
        return pd.read_csv(metadata, dtype={"image_id": str})
    ground_truth = isic.find_ground_truth(root)
    if ground_truth is not None:
        return isic.read(root, ground_truth)
    seven_point = derm7pt.find(root)
    return None if seven_point is None else derm7pt.read(root, seven_point).drop(columns="path")


def _index_images(root: Path) -> dict[str, Path]:
    """image_id (file stem) -> path, for every image file below root."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.setdefault(path.stem, path)
    return found


def load_dataset(root, *, skip_bad: bool = False, classes=CLASS_CODES, every_class: bool = True,
                 skip_other_labels: bool = False) -> Dataset:
    """Read and check a dataset folder; raise DatasetError with a specific message if it is unusable.
    Training needs images of every class; an evaluation (`every_class=False`) can test some of them, and
    (`skip_other_labels`) leave out images of classes the model does not know, such as ISIC's SCC."""
    try:
        return _load_dataset(Path(root).expanduser(), skip_bad, classes, every_class, skip_other_labels)
    except DatasetError:
        raise
    except OSError as exc:   # a folder or file the server may not read
        raise DatasetError(f"Cannot read {exc.filename or root}: {exc.strerror or exc}.") from None
    except (RuntimeError, ValueError) as exc:   # "~nosuchuser/...", a NUL byte: not a path at all
        raise DatasetError(f"Not a usable folder path: {root!r} ({exc}).") from None


def _load_dataset(root: Path, skip_bad: bool, classes, every_class: bool, skip_other_labels: bool) -> Dataset:
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a dataset folder." if root.exists() else
                           f"Dataset folder not found: {root}")
    metadata = find_metadata(root)
    class_folders = any(p.is_dir() and class_of_folder(p.name) in classes for p in root.iterdir())
    ground_truth = isic.find_ground_truth(root)
    # a metadata.csv without dx is class folders' lesion table or an ISIC archive export, not HAM10000's
    ham_metadata = metadata is not None and not ((class_folders or ground_truth) and "dx" not in _columns(metadata))
    if ham_metadata and SMARTPHONE_COLUMNS <= _columns(metadata) and "dx" not in _columns(metadata):
        raise DatasetError(
            f"{metadata.name} is PAD-UFES-20's (img_id, diagnostic): smartphone photos of the skin, not dermoscopy. "
            "This model reads dermoscopic photos only (HAM10000's kind), so its figures on them would not say how "
            "it does on what it is made for; it is neither evaluated nor trained on them.")
    if ham_metadata:
        table, layout = _read_ham10000(root, metadata), "ham10000"
    elif ground_truth is not None:
        table, layout = _read_collection(root, ground_truth, isic.read), "isic"
    elif (seven_point := derm7pt.find(root)) is not None:
        table, layout = _read_collection(root, seven_point, derm7pt.read), "derm7pt"
    elif (ph2_table := ph2.find(root)) is not None:
        table, layout = _read_collection(root, ph2_table, ph2.read), "ph2"
    elif class_folders:      # a metadata.csv without dx beside class folders is their lesion table
        table, layout = _read_class_folders(root, classes, skip_other_labels), "folders"
    elif not any(root.iterdir()):
        raise DatasetError(f"The dataset folder {root} is empty.")
    else:
        raise DatasetError(
            f"No labels found in {root}: expected HAM10000_metadata.csv (lesion_id, image_id, dx), an ISIC "
            f"ground-truth or metadata CSV (image, MEL, NV, ... or isic_id, diagnosis or diagnosis_1..5), Derm7pt's "
            f"meta/meta.csv, PH2's PH2_dataset.txt or one sub-folder per class ({', '.join(classes)}).")
    if table.empty:
        raise DatasetError(f"The dataset in {root} has no images.")
    skipped = []
    if "image_type" in table:
        table, skipped = _dermoscopy_only(table, skip_other_labels)
    unknown = table[~table["dx"].isin(classes)]
    if len(unknown) and not skip_other_labels:
        raise DatasetError(
            f"{len(unknown)} row{'s have' if len(unknown) != 1 else ' has'} unknown dx values "
            f"{sorted(unknown['dx'].astype(str).unique())[:SHOW]}; "
            f"expected one of {', '.join(classes)}. First rows: {first_few(unknown['image_id'])}. Training or an "
            "evaluation can be told to leave them out (--skip-other-labels).")
    if len(unknown):
        skipped += [f"{i}: labelled {dx!r}, not one of the model's classes" for i, dx in zip(unknown["image_id"],
                                                                                              unknown["dx"])]
        table = table[table["dx"].isin(classes)]
        if table.empty:
            raise DatasetError(f"None of the images is labelled with one of {', '.join(classes)}.")
    missing = table[table["path"].isna()]
    if len(missing):
        if not skip_bad:
            raise DatasetError(
                f"{len(missing)} images listed in the metadata are missing: {first_few(missing['image_id'])}")
        skipped += [f"{i}: missing" for i in missing["image_id"]]
        table = table.dropna(subset=["path"])
    if table.empty:
        raise DatasetError(f"None of the {len(missing)} images listed in the metadata could be found below {root}.")
    empty = [c for c in classes if not (table["dx"] == c).any()]
    if empty and every_class:
        raise DatasetError(f"These classes have no images: {', '.join(empty)}.")
    table = table.assign(source=root.name)
    return Dataset(root=root, layout=layout, table=table.reset_index(drop=True), skipped=skipped)


def as_roots(folders) -> list[Path]:
    """One dataset folder or several, as a list of paths (a run, a report or a metadata lookup may name either)."""
    return [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]


def load_datasets(roots, *, skip_bad: bool = False, classes=CLASS_CODES, skip_other_labels: bool = False) -> Dataset:
    """Several dataset folders read as one training set, each image keeping its source (the folder's name).

    An image id or a lesion id may belong to one source only: the split is keyed by image id, and a lesion
    photographed in two collections would otherwise sit on both sides of it. Every class must have images
    somewhere; a source may lack some (a clinic's melanomas and naevi).
    """
    roots = [root.expanduser() for root in as_roots(roots)]
    if len(roots) == 1:
        return load_dataset(roots[0], skip_bad=skip_bad, classes=classes, skip_other_labels=skip_other_labels)
    names = [r.name for r in roots]
    if len(set(names)) < len(names):
        raise DatasetError(f"Two dataset folders have the same name ({first_few(sorted(names))}); each source is "
                           "known by its folder's name, so give them different names.")
    parts = [load_dataset(r, skip_bad=skip_bad, classes=classes, every_class=False,
                          skip_other_labels=skip_other_labels) for r in roots]
    table = pd.concat([p.table for p in parts], ignore_index=True)
    for key in ("image_id", "lesion_id"):
        shared = table.groupby(key)["source"].nunique()
        shared = shared[shared > 1]
        if len(shared):
            raise DatasetError(f"{len(shared)} {key}s appear in more than one dataset: {first_few(shared.index)}. "
                               "An image or lesion may belong to one source only.")
    empty = [c for c in classes if not (table["dx"] == c).any()]
    if empty:
        raise DatasetError(f"These classes have no images in any of the datasets: {', '.join(empty)}.")
    return Dataset(root=roots[0], layout="+".join(p.layout for p in parts), table=table,
                   skipped=[s for p in parts for s in p.skipped])


def _read_ham10000(root: Path, metadata: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(metadata, dtype=str)
    except Exception as exc:
        raise DatasetError(f"Cannot read {metadata.name}: {exc}") from None
    needed = {"image_id", "dx"}
    if not needed <= set(frame.columns):
        raise DatasetError(f"{metadata.name} lacks the columns {sorted(needed - set(frame.columns))}: HAM10000's "
                           "metadata has lesion_id, image_id and dx; an ISIC export is read by its isic_id (or image) "
                           "and diagnosis (or diagnosis_1 to diagnosis_5) columns.")
    return _labelled_images(root, frame, metadata.name)


COLLECTION_FILE_ERRORS = (isic.IsicFileError, derm7pt.Derm7ptFileError, ph2.Ph2FileError)


def _read_collection(root: Path, label_file: Path, read: Callable[[Path, Path], pd.DataFrame]) -> pd.DataFrame:
    """Another collection's own label file read in HAM10000's terms by its module (`isic`, `derm7pt`, `ph2`)."""
    try:
        frame = read(root, label_file)
    except COLLECTION_FILE_ERRORS as exc:
        raise DatasetError(str(exc)) from None
    return _labelled_images(root, frame, label_file.name)


def _labelled_images(root: Path, frame: pd.DataFrame, file_name: str) -> pd.DataFrame:
    """path, image_id, lesion_id, dx from a label file's rows (image_id, dx, perhaps lesion_id, perhaps the path
    the file gives), checked; the path is blank where no image below `root` has that id."""
    if frame.empty:
        raise DatasetError(f"{file_name} has no rows.")
    blank = frame[frame["dx"].isna() | frame["image_id"].isna()]
    if len(blank):
        raise DatasetError(f"{len(blank)} rows of {file_name} have no image_id or dx: rows {first_few(blank.index + 2)}")
    frame["dx"] = frame["dx"].str.strip().str.lower()   # other collections write "MEL" or " nv"
    if "lesion_id" not in frame:
        frame["lesion_id"] = frame["image_id"]
    frame["lesion_id"] = frame["lesion_id"].fillna(frame["image_id"])
    duplicated = frame[frame["image_id"].duplicated()]
    if len(duplicated):
        raise DatasetError(f"{len(duplicated)} image_ids appear twice in {file_name}: {first_few(duplicated['image_id'])}")
    if "path" not in frame:
        index = _index_images(root)
        frame["path"] = frame["image_id"].map(lambda i: str(index[i]) if i in index else None)
    return frame[["path", "image_id", "lesion_id", "dx", *(["image_type"] if "image_type" in frame else [])]]


def _dermoscopy_only(table: pd.DataFrame, skip_other_photos: bool) -> tuple[pd.DataFrame, list[str]]:
    """An ISIC export may mix dermoscopy with clinical photos and total-body tiles (its image_type column): the
    model reads dermoscopy only, so the others are refused, or left out and named when asked."""
    kinds = table["image_type"].fillna("").astype(str).str.strip()
    table = table.drop(columns="image_type")
    other = isic.not_dermoscopic(kinds)
    if not other.any():
        return table, []
    counts = ", ".join(f"{n} {kind}" for kind, n in kinds[other].value_counts().items())
    if not skip_other_photos:
        n = int(other.sum())
        raise DatasetError(f"{n} image{'s are' if n != 1 else ' is'} not dermoscopy by the download's image_type "
                           f"({counts}); "
                           f"the model reads dermoscopic photos only. First rows: {first_few(table['image_id'][other])}. "
                           "Training or an evaluation can be told to leave them out (--skip-other-labels).")
    if other.all():
        raise DatasetError(f"None of the {len(table)} images is dermoscopy by the download's image_type ({counts}); "
                           "the model reads dermoscopic photos only, so there is nothing left to use.")
    skipped = [f"{i}: not dermoscopy ({kind})" for i, kind in zip(table["image_id"][other], kinds[other])]
    return table[~other], skipped


def class_of_folder(name: str) -> str:
    """The class a folder's name gives ("MEL", "AK", "melanoma", "Melanocytic_nevi"), or the name in lower case."""
    word = " ".join(name.replace("_", " ").split()).lower()
    return FOLDER_NAMES.get(word) or isic.in_ham10000_terms(pd.Series([word])).iloc[0]


def _read_class_folders(root: Path, classes, skip_other_labels: bool = False) -> pd.DataFrame:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    strays = [p.name for p in folders if class_of_folder(p.name) not in classes]
    if strays and not skip_other_labels:
        raise DatasetError(f"Unknown class folders {first_few(sorted(strays))}; expected {', '.join(classes)} (or "
                           "their names in words). Training or an evaluation can be told to leave them out "
                           "(--skip-other-labels).")
    rows = [(str(path), path.stem, path.stem, class_of_folder(folder.name))
            for folder in folders
            for path in sorted(folder.rglob("*"))
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]
    frame = pd.DataFrame(rows, columns=["path", "image_id", "lesion_id", "dx"])
    shared = frame[frame["image_id"].duplicated(keep=False)].sort_values("image_id")
    if len(shared):   # an image's id is its file name, and the split and lesion table are keyed by it
        raise DatasetError(f"{shared['image_id'].nunique()} file names appear more than once: "
                           f"{first_few(shared['path'].map(lambda p: str(Path(p).relative_to(root))))}. "
                           "Give each image a name of its own.")
    # the lesion table: the first CSV beside the folders with both columns (others, such as an
    # attribution list, are not it); without one, each image is its own lesion
    lesions = next((csv for csv in sorted(root.glob("*.csv")) if {"image_id", "lesion_id"} <= _columns(csv)), None)
    if lesions is not None and len(frame):
        try:
            meta = pd.read_csv(lesions, dtype=str)
        except Exception as exc:   # pandas raises several kinds for an empty, malformed or non-UTF-8 file
            raise DatasetError(f"Cannot read {lesions.name}: {exc}") from None
        mapping = dict(zip(meta["image_id"], meta["lesion_id"]))
        frame["lesion_id"] = frame["image_id"].map(mapping).fillna(frame["lesion_id"])
    return frame


def _columns(csv: Path) -> set[str]:
    """A CSV's column names (its header only), or a DatasetError naming the file it cannot read."""
    try:
        return set(pd.read_csv(csv, nrows=0).columns)
    except Exception as exc:   # empty, malformed or non-UTF-8
        raise DatasetError(f"Cannot read {csv.name}: {exc}") from None


@dataclass
class ImageArrays:
    """A dataset's pictures prepared for the model, with what could not be read."""
    pixels: np.ndarray        # (n, size, size, 3) uint8
    table: pd.DataFrame       # the rows that were read, in the same order
    fingerprint: str          # sha256 over image ids, labels and file bytes
    unreadable: list[str]


def read_images(table: pd.DataFrame, input_size: int, detail_side: int | None = None, *,
                skip_bad: bool = False, workers: int = 4, on_progress=None) -> ImageArrays:
    """Decode and prepare every image once (Pillow releases the GIL, so threads help)."""
    paths = list(table["path"])

    def load(path):
        """(sha256 of the file, prepared pixels, error): only the digest outlives the call, and no more than
        the size limit is read, so a huge stray file or a large dataset does not fill the memory."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(images.MAX_BYTES + 1)
            return hashlib.sha256(data).digest(), images.prepare(images.decode(data).rgb, input_size, detail_side), None
        except (images.ImageError, OSError) as exc:
            return b"", None, str(exc)

    results = []
    with ThreadPoolExecutor(workers) as pool:
        for i, result in enumerate(pool.map(load, paths), 1):
            results.append(result)
            if on_progress and (i % 200 == 0 or i == len(paths)):
                on_progress(i, len(paths))
    bad = [f"{Path(p).name} ({err})" for p, (_, _, err) in zip(paths, results) if err]
    if bad and not skip_bad:
        raise DatasetError(f"{len(bad)} images cannot be read: {first_few(bad)}. "
                           "Fix or remove them, or pass --skip-bad to go on without them.")
    if paths and len(bad) == len(paths):
        raise DatasetError(f"None of the {len(bad)} images can be read: {first_few(bad)}.")
    keep = [err is None for _, _, err in results]
    digest = hashlib.sha256()
    for (image_id, dx), (file_digest, _, err) in zip(table[["image_id", "dx"]].itertuples(index=False), results):
        if err is None:
            digest.update(f"{image_id}:{dx}:".encode())
            digest.update(file_digest)
    pixels = np.stack([arr for _, arr, err in results if err is None]) if any(keep) else \
        np.zeros((0, input_size, input_size, 3), np.uint8)
    return ImageArrays(pixels=pixels, table=table[keep].reset_index(drop=True),
                       fingerprint=digest.hexdigest(), unreadable=bad)
