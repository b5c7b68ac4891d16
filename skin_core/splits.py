"""Splitting a dataset by lesion into train, validation and test, and keeping to a bundle's recorded split.

No lesion ever sits on two sides: its photos go together (HAM10000 holds several photos of many lesions), and the
split is stratified by class within each source, so that one site's test lesions stay those of a model trained on
it alone. A bundle records its split (split.csv: image_id, lesion_id, dx, subset); the functions below reuse it,
check a new run against it (a model continued from another must not test on what that one learnt from) and leave
out what a model learnt from when it is evaluated on a dataset it shares images with.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .classes import CLASS_CODES
from .data import SAMPLE_DIR, DatasetError, first_few, load_dataset, load_datasets

def sample_examples(split_csv=None) -> list[tuple[str, Path, str | None]]:
    """One shipped sample image per class for the app's one-click examples, as (dx, path, subset): the subset
    ("train", "val", "test") the image has in the split.csv of the model being shown, None if unknown. An
    image of that model's test split is preferred, so an example shows how it does on a lesion it never saw;
    the samples belong to the development data, so some classes may have none. Empty if not shipped."""
    try:
        table = load_dataset(SAMPLE_DIR).table
    except DatasetError:
        return []
    subsets = pd.Series(None, index=table.index, dtype=object)
    if split_csv is not None and Path(split_csv).is_file():
        try:
            subsets = table["image_id"].map(_recorded_subsets(split_csv))
        except DatasetError:
            pass                                       # not a split: the subsets stay unknown
    table = table.assign(subset=subsets.where(subsets.notna(), None), unseen=subsets.eq("test"))
    chosen = table.sort_values("unseen", ascending=False, kind="stable").drop_duplicates("dx")
    return [(row.dx, Path(row.path), row.subset) for row in chosen.sort_values("dx").itertuples()]



MIN_LESIONS_PER_CLASS = 3
"""Fewer lesions than this cannot give a class one lesion on each side. It is the least, not enough: the folds
follow the largest class, so a class with few lesions may still have none in validation or test."""


def split_by_lesion(table: pd.DataFrame, *, test_fraction: float = 0.2, val_fraction: float = 0.15,
                    seed: int = 42) -> pd.Series:
    """Assign each row to train / val / test, stratified by dx and grouped by lesion_id.

    Uses StratifiedGroupKFold twice: one fold becomes the test set, then one fold of the rest the
    validation set, so no lesion ever sits on two sides. Returns a Series of subset names. On a small
    dataset the folds are fewer (at most as many as the largest class has lesions), so the shares held
    out grow; a class with fewer than MIN_LESIONS_PER_CLASS lesions is refused, and one with few more may
    still miss a side.
    """
    lesions = table.groupby("dx")["lesion_id"].nunique()
    few = lesions[lesions < MIN_LESIONS_PER_CLASS]
    if len(few):
        raise DatasetError(
            f"Too few lesions to split: {', '.join(f'{c} has {n}' for c, n in few.items())}. Each class needs at "
            f"least {MIN_LESIONS_PER_CLASS} lesions (one each for training, validation and test, at the very "
            "least); photos of one lesion count once.")
    subset = pd.Series("train", index=table.index)
    rest = table.index.to_numpy()
    for name, fraction in (("test", test_fraction), ("val", val_fraction / (1 - test_fraction))):
        if fraction <= 0:
            continue
        part = table.loc[rest]
        n_splits = max(2, min(round(1 / fraction), int(part.groupby("dx")["lesion_id"].nunique().max())))
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, held = next(folds.split(part, part["dx"], groups=part["lesion_id"]))
        subset.loc[rest[held]] = name
        rest = np.setdiff1d(rest, rest[held])
    return subset


SIDES_BY_PRECEDENCE = ("train", "val", "test")


def keep_copies_together(subset: pd.Series, groups: pd.Series) -> pd.Series:
    """The subsets of a split by lesion with each group of lesions joined by copies of one photo (copies.copy_groups)
    moved to the first side any of them is on, train before validation before test. Only those lesions move, so
    the split is otherwise the one derived by lesion alone, and the held-out sides only ever lose photos."""
    rank = subset.map(SIDES_BY_PRECEDENCE.index)
    return rank.groupby(groups).transform("min").map(dict(enumerate(SIDES_BY_PRECEDENCE)))


def split_by_source(table: pd.DataFrame, *, test_fraction: float = 0.2, val_fraction: float = 0.15,
                    seed: int = 42, split_csv=None,
                    groups_of: Callable[[pd.DataFrame], pd.Series] | None = None) -> tuple[pd.Series, dict[str, str]]:
    """Each row's subset, split by lesion within each source (the same seed for each), and how each source
    was split. A source whose images a bundle's `split_csv` lists takes its recorded subsets: a model trained
    on more sites keeps the validation and test lesions of one trained on the first alone. A source split afresh
    keeps together the lesions that `groups_of` (given its rows) puts in one group: see keep_copies_together."""
    recorded = None if split_csv is None else subsets_of_listed(table, split_csv)
    subsets, how = pd.Series(index=table.index, dtype=object), {}
    for source, rows in table.groupby("source", sort=False):
        if recorded is not None and recorded[rows.index].notna().all():
            subsets[rows.index] = recorded[rows.index]
            how[source] = f"as recorded in {Path(split_csv).parent.name}/{Path(split_csv).name}"
        else:
            fresh = split_by_lesion(rows, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
            subsets[rows.index] = fresh if groups_of is None else keep_copies_together(fresh, groups_of(rows))
            how[source] = f"StratifiedGroupKFold, seed {seed}" + (", copies moved to their originals' side"
                                                                  if groups_of else "")
    return subsets, how


def subsets_of_listed(table: pd.DataFrame, split_csv) -> pd.Series:
    """subsets_from_file for the sources the file lists (NaN for the rows of the others): a source may be
    wholly listed or not at all, since half a source's split cannot be completed without leaking lesions."""
    subsets = table["image_id"].map(_recorded_subsets(split_csv))
    if subsets.isna().all():
        raise DatasetError(f"None of the images is in {split_csv}. Use the split of a bundle trained on one of "
                           "these datasets.")
    for source, rows in subsets.groupby(table["source"]):
        if rows.notna().any() and rows.isna().any():
            missing = table.loc[rows.index[rows.isna()], "image_id"]
            raise DatasetError(f"{len(missing)} images of {source} are not in {split_csv}: {first_few(missing)}. "
                               "Use the split of a bundle trained on this dataset.")
    return subsets


def _read_split(split_csv) -> pd.DataFrame:
    """A split.csv as text (image ids such as 0001 must stay strings to match the dataset's), or a
    DatasetError saying why the file is not one."""
    try:
        frame = pd.read_csv(split_csv, dtype=str)
    except (ValueError, OSError) as exc:
        raise DatasetError(str(exc)) from None
    absent = {"image_id", "subset"} - set(frame.columns)
    if absent:
        raise DatasetError(f"no {' or '.join(sorted(absent))} column")
    return frame


def _recorded_subsets(split_csv) -> pd.Series:
    """Each image's subset as a bundle's split.csv records it (image_id -> subset), or a DatasetError saying
    why the file is not a split: unreadable, without those columns, or listing an image twice."""
    try:
        recorded = _read_split(split_csv).set_index("image_id")["subset"]
    except DatasetError as exc:
        raise DatasetError(f"{split_csv} is not a readable split file with image_id and subset columns ({exc}).") from None
    if recorded.index.duplicated().any():
        raise DatasetError(f"{split_csv} lists some images twice: "
                           f"{first_few(recorded.index[recorded.index.duplicated()])}.")
    return recorded


def subsets_from_file(table: pd.DataFrame, split_csv) -> pd.Series:
    """Each row's subset as a bundle's split.csv (image_id, subset) records it; every image must be listed."""
    subsets = table["image_id"].map(_recorded_subsets(split_csv))
    missing = table.loc[subsets.isna(), "image_id"]
    if len(missing):
        raise DatasetError(f"{len(missing)} images are not in {split_csv}: {first_few(missing)}. "
                           "Use the split of a bundle trained on this dataset.")
    return subsets


def split_problem(table: pd.DataFrame, split_csv) -> str | None:
    """Why a bundle's recorded split cannot be reused on this dataset (None if it can): checked before a
    run is launched, so a mismatch is a message on the form rather than a failed run."""
    if not Path(split_csv).is_file():
        return f"There is no {Path(split_csv).name} beside that model, so its lesions cannot be held out again."
    try:
        subsets_from_file(table, split_csv)
    except DatasetError as exc:
        return f"That model's split does not cover this dataset: {exc}"
    return None


def holds_out_the_same(first_split_csv, candidate_split_csv) -> bool:
    """Whether the candidate's split validates on exactly the first's validation images and gives every image
    both list the first's subset: the same split, that split on a share of its training images (a learning
    curve), or that split beside other collections (a run on more sources, none of whose lesions the first
    validates on). Only then are scores on the first's validation images fair to both."""
    try:
        mine, theirs = (_read_split(f) for f in (first_split_csv, candidate_split_csv))
    except DatasetError:
        return False
    listed = theirs["image_id"].isin(mine["image_id"])
    if "lesion_id" in mine and "lesion_id" in theirs:     # another collection must not hold a validated lesion
        validated = mine.loc[mine["subset"] == "val", "lesion_id"]
        if theirs.loc[~listed, "lesion_id"].isin(validated).any():
            return False
    mine, theirs = mine.set_index("image_id")["subset"], theirs[listed].set_index("image_id")["subset"]
    same_subsets = (theirs == mine.reindex(theirs.index)).all()
    return bool(same_subsets and set(theirs.index[theirs == "val"]) == set(mine.index[mine == "val"]))


def held_out_leak(starting_split_csv, table: pd.DataFrame) -> str | None:
    """Why a run starting from the bundle whose split is `starting_split_csv` would test on images that bundle
    was fitted or tuned on, given the new run's "subset" column (None if it would not). Training refuses
    such a run; the Retrain page checks it before launching one."""
    starting_split_csv = Path(starting_split_csv)
    if not starting_split_csv.is_file():
        return (f"The starting model has no {starting_split_csv.name}, so its training images are unknown and the "
                "new test split could contain them.")
    try:
        earlier = _read_split(starting_split_csv)
    except DatasetError as exc:
        return (f"The starting model's {starting_split_csv.name} cannot be read ({exc}), so its training "
                "images are unknown and the new test split could contain them.")
    test = table[table["subset"] == "test"]
    leaked = sorted(test.loc[_learned_from(test, earlier), "image_id"])
    if leaked:
        return (f"The starting model was trained or tuned on {len(leaked)} images (or other photos of their lesions) "
                f"this run would hold out for testing (e.g. {', '.join(leaked[:3])}).")
    return None


def _learned_from(table: pd.DataFrame, recorded: pd.DataFrame) -> pd.Series:
    """Which rows of `table` a bundle whose split.csv is `recorded` trained or was tuned on: the image
    itself, or any photo of the same lesion (HAM10000 holds several photos of many lesions)."""
    seen = recorded[recorded["subset"].isin(["train", "val"])]
    learned = table["image_id"].isin(seen["image_id"])
    if "lesion_id" in seen and "lesion_id" in table:
        learned |= table["lesion_id"].isin(seen["lesion_id"])
    return learned


def with_inherited_rows(split: pd.DataFrame, starting_split_csv) -> pd.DataFrame:
    """A run's split (image_id, lesion_id, dx, subset, ...) plus the rows of its starting bundle's split for images
    the run's own datasets do not hold. A model continued from another has learnt what that one learnt: its
    split.csv must list those images too, or an evaluation on them (leave_out_seen) would score them as unseen.
    The starting bundle's test rows stay test rows: neither model trained on them."""
    try:
        earlier = _read_split(starting_split_csv)
    except DatasetError as exc:
        raise DatasetError(f"The starting model's split {starting_split_csv} cannot be read ({exc}), so the images "
                           "it learnt from cannot be recorded.") from None
    inherited = earlier[~earlier["image_id"].isin(split["image_id"])]
    return pd.concat([split, inherited.reindex(columns=split.columns)], ignore_index=True)


def leave_out_seen(table: pd.DataFrame, split_csv) -> tuple[pd.DataFrame, int]:
    """The rows of `table` whose image and lesion the bundle with `split_csv` neither trained nor was tuned
    on, and how many were left out: a dataset that shares images with a model's development data (HAM10000
    itself, say) must not score what the model learned from."""
    learned = _learned_from(table, _read_split(split_csv))
    return table[~learned].reset_index(drop=True), int(learned.sum())


def split_when_starting_from(table: pd.DataFrame, starting_split_csv, seed: int, *, test_fraction: float = 0.2,
                             val_fraction: float = 0.15) -> tuple[bool, str | None]:
    """How a run from a bundle's weights keeps that bundle's held-out lesions out of its training, as
    (reuse the bundle's split, problem), judged on the split training will make: with the bundle's split.csv,
    each source it lists keeps its recorded subsets and the others are split afresh with `seed`
    (split_by_source), reused if that tests on none of the images the bundle was fitted or tuned on; else every
    source split afresh, if that does not either; else the reason the run must not start. Checked before
    launching, so a doomed run is a message. (Training then keeps copies of one photo on one side, which only
    takes photos out of the held-out sides, so a split found clean here stays clean.)"""
    shares = {"test_fraction": test_fraction, "val_fraction": val_fraction, "seed": seed}
    try:
        kept, _ = split_by_source(table, split_csv=starting_split_csv, **shares)
    except DatasetError:
        kept = None                 # it lists none of these images, or half a source: training could not keep it
    if kept is not None and held_out_leak(starting_split_csv, table.assign(subset=kept)) is None:
        return True, None
    fresh, _ = split_by_source(table, **shares)
    return False, held_out_leak(starting_split_csv, table.assign(subset=fresh))


def load_under_split(root, split_csv, *, classes=CLASS_CODES) -> pd.DataFrame:
    """The dataset's table with a "subset" column taken from a bundle's split.csv: how scripts revisit a
    bundle's own validation or test lesions without re-deriving the split. Images labelled beyond the classes
    are left out, as a run trained with skip_other_labels left them: the split lists only what the run read."""
    table = load_dataset(root, classes=classes, skip_other_labels=True).table
    table["subset"] = subsets_from_file(table, split_csv)
    return table


def rows_in_split(roots, split: pd.DataFrame, subsets=("train", "val")) -> tuple[pd.DataFrame, int]:
    """The rows of the datasets that a bundle's split puts in `subsets` (by default: what it trained or was tuned
    on), and how many of those images none of the datasets holds (images labelled beyond the seven classes are
    never in a split, as in load_under_split)."""
    wanted = set(split.loc[split["subset"].isin(subsets), "image_id"])
    table = load_datasets(roots, skip_other_labels=True).table
    table = table[table["image_id"].isin(wanted)].reset_index(drop=True)
    return table, len(wanted) - len(table)


def split_digest(table: pd.DataFrame) -> str:
    """sha256 over the sorted (subset, image_id) pairs of the training and validation rows.

    Weights fitted elsewhere carry it, so the bundle step can prove it holds out the same lesions.
    """
    rows = table.loc[table["subset"].isin(["train", "val"]), ["subset", "image_id"]]
    lines = sorted(f"{subset}:{image_id}" for subset, image_id in rows.itertuples(index=False))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
