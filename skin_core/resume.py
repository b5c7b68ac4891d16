"""A training run's state after every finished epoch, so that a run stopped by a crash, a cancel or a
machine switched off continues from its last finished epoch instead of from the start.

A checkpoint folder holds a marker file, one sub-folder per saved epoch (weights, optimizer state,
the best epoch's weights) and `state.json`, which names the current sub-folder. Each save is written
to disk (fsync) before `state.json` is replaced, atomically, and the previous save is deleted only
after that, so a run killed or a machine switched off while saving continues from the epoch before,
never from half a save. Only folders that are new, empty or a checkpoint are used, and only the
checkpoint's own files are ever deleted.

After a restart the shuffling and augmentation draw from a fresh random stream (seeded from the seed
and the epoch), so the remaining epochs do not replay the first epochs' batches; the run then differs
from an unbroken one as two runs with different seeds do.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from .jsonfiles import json_object_or_none, jsonable, read_json_object, replace_json, sync_to_disk

STATE_FILE = "state.json"
MARKER_FILE = "skin_core_checkpoint"
WEIGHTS_FILE = "weights.npz"
OPTIMIZER_FILE = "optimizer.npz"
BEST_FILE = "best.npz"
SAVE_PATTERN = re.compile(r"epoch-\d{3}(-finished)?(\.partial)?")
# a state file being replaced when the run stopped (jsonfiles' temporary name)
STATE_TEMPORARY = re.compile(rf"\.{re.escape(STATE_FILE)}\..+\.tmp")
# settings that may differ between attempts because they do not change what is trained
FREE_SETTINGS = ("out", "name", "progress_file", "checkpoint", "workers")


class CheckpointError(ValueError):
    """A checkpoint that cannot be continued: unreadable, or of a run with other settings or images."""


@dataclass
class FitState:
    """Where the fitting of a run stands after its last finished epoch (what a checkpoint saves; a Retrain job's
    status as the page shows it is skin_core.jobs.JobState)."""
    epoch: int = 0                     # epochs finished, the head phase included
    best: float | None = None          # the best validation score so far and its epoch
    best_epoch: int | None = None
    early_stopping: dict = field(default_factory=dict)   # wait and best of the fine-tuning phase's early stopping
    history: list[dict] = field(default_factory=list)    # one row per finished epoch: epoch, metrics, phase
    finished: bool = False             # fitting is over (last epoch or stopped early); only the bundle is left
    resumed_at: list[int] = field(default_factory=list)  # the epochs after which the run was started again

    def history_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.history).set_index("epoch")
        return frame[[c for c in frame.columns if c != "phase"] + ["phase"]]


def folder_problem(folder: str | Path | None, out: str | Path | None = None) -> str | None:
    """Why `folder` cannot hold a checkpoint (a file, another folder's contents, the bundle's own folder,
    not writable), or None; the folder is made if it does not exist."""
    if folder is None:
        return None
    path = Path(folder)
    if out is not None:
        here, there = path.resolve(), Path(out).resolve()
        if here == there or there in here.parents or here in there.parents:
            return f"the checkpoint folder {path} and the bundle folder {out} must not lie inside each other"
    if path.exists() and not path.is_dir():
        return f"the checkpoint folder {path} is a file"
    if path.is_dir() and not _is_checkpoint(path) and any(path.iterdir()):
        return f"the checkpoint folder {path} holds other files; name a new or empty folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"the checkpoint folder {path} cannot be made: {exc.strerror or exc}"
    if not os.access(path, os.W_OK):
        return f"the checkpoint folder {path} cannot be written"
    return None


def _is_checkpoint(path: Path) -> bool:
    """A folder this module wrote: marked, nothing else in it."""
    return (path / MARKER_FILE).is_file() and \
        all(child.name in (STATE_FILE, MARKER_FILE) or SAVE_PATTERN.fullmatch(child.name)
            or STATE_TEMPORARY.fullmatch(child.name) for child in path.iterdir())


def _own_saves(folder: Path) -> list[Path]:
    return [child for child in folder.iterdir() if SAVE_PATTERN.fullmatch(child.name)] if folder.is_dir() else []


class Checkpoint:
    """The saved state of one run, tied to its settings and to the images it trains and validates on."""

    def __init__(self, folder: str | Path, settings: dict, split_digest: str):
        problem = folder_problem(folder, settings.get("out"))
        if problem:
            raise CheckpointError(problem[0].upper() + problem[1:] + ".")
        self.folder, self.settings, self.split_digest = Path(folder), settings, split_digest
        (self.folder / MARKER_FILE).touch()

    def load(self) -> FitState | None:
        """The saved state of this run, or None when nothing was saved yet."""
        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        try:
            record = read_json_object(path)
            saved, settings = self.folder / record["saved"], dict(record["settings"])
            state = FitState(**{f.name: record[f.name] for f in fields(FitState)})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"The checkpoint {path} cannot be read ({exc}); remove {self.folder} to start "
                                  "the run over.") from exc
        if set(settings) != set(self.settings):
            raise CheckpointError(f"The checkpoint in {self.folder} was written by another version of this code "
                                  f"(settings {', '.join(sorted(set(settings) ^ set(self.settings)))} differ): "
                                  "name another checkpoint folder to start over.")
        changed = [k for k in sorted(settings) if k not in FREE_SETTINGS and self.settings[k] != settings[k]]
        if "data_fingerprint" in changed:
            raise CheckpointError(f"The checkpoint in {self.folder} was trained on other images or labels than this "
                                  "dataset now holds (a label corrected or a photo replaced since): name another "
                                  "checkpoint folder to start over.")
        if changed:
            described = ", ".join(f"{k} {settings[k]!r} then, {self.settings[k]!r} now" for k in changed)
            raise CheckpointError(f"The checkpoint in {self.folder} is of a run with other settings ({described}): "
                                  "continue it with the same settings, or name another checkpoint folder to start "
                                  "over.")
        if record.get("split_digest") != self.split_digest:
            raise CheckpointError(f"The checkpoint in {self.folder} was trained and validated on other images than "
                                  "this dataset and split give: name another checkpoint folder to start over.")
        if not saved.is_dir():
            raise CheckpointError(f"The checkpoint in {self.folder} lacks its saved epoch {saved.name}; remove the "
                                  "folder to start the run over.")
        self._saved = saved
        return state

    def restore_weights(self, model: keras.Model) -> list[np.ndarray] | None:
        """Put the saved weights into `model`; returns the best epoch's weights (None if none was kept)."""
        model.set_weights(_read_arrays(self._saved / WEIGHTS_FILE))
        best = self._saved / BEST_FILE
        return _read_arrays(best) if best.is_file() else None

    def restore_optimizer(self, model: keras.Model) -> None:
        """Continue the compiled model's optimizer (moments and step count, hence the learning-rate schedule)."""
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        values = _read_arrays(self._saved / OPTIMIZER_FILE)
        if [tuple(v.shape) for v in optimizer.variables] != [v.shape for v in values]:
            raise CheckpointError(f"The optimizer state saved in {self._saved} does not fit this model; remove "
                                  f"{self.folder} to start the run over.")
        for variable, value in zip(optimizer.variables, values):
            variable.assign(value)

    def save(self, state: FitState, model: keras.Model, best_weights: list[np.ndarray] | None) -> None:
        """Write the state of the epoch just finished to disk, point state.json at it, then drop the earlier one."""
        name = f"epoch-{state.epoch:03d}" + ("-finished" if state.finished else "")
        target, partial = self.folder / name, self.folder / (name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        np.savez(partial / WEIGHTS_FILE, *model.get_weights())
        if model.optimizer is not None and model.optimizer.built:
            np.savez(partial / OPTIMIZER_FILE, *[np.asarray(v) for v in model.optimizer.variables])
        if best_weights is not None:
            np.savez(partial / BEST_FILE, *best_weights)
        for written in partial.iterdir():
            sync_to_disk(written)
        sync_to_disk(partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        record = {"settings": self.settings, "split_digest": self.split_digest, "saved": name, **asdict(state)}
        replace_json(self.folder / STATE_FILE, record, indent=1, default=jsonable)
        self._saved = target
        for old in _own_saves(self.folder):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)


def last_saved_epoch(folder: str | Path) -> dict | None:
    """What a checkpoint folder can continue from, {"epoch": last finished epoch, "finished": fitting was over},
    or None when it holds nothing usable (no state, or a state naming weights that are gone): read here, beside
    the code that writes it, so nothing else depends on the state file's layout."""
    saved = json_object_or_none(Path(folder) / STATE_FILE)
    if saved is None or not (saved.get("epoch") and saved.get("saved")):
        return None
    if not (Path(folder) / str(saved["saved"]) / WEIGHTS_FILE).is_file():
        return None
    return {"epoch": saved["epoch"], "finished": bool(saved.get("finished"))}


def discard(folder: str | Path) -> None:
    """Delete what a run saved (its bundle is written), and the folder if nothing else is in it."""
    folder = Path(folder)
    for old in _own_saves(folder):
        shutil.rmtree(old, ignore_errors=True)
    for name in (STATE_FILE, MARKER_FILE):
        (folder / name).unlink(missing_ok=True)
    for temporary in folder.iterdir() if folder.is_dir() else ():
        if STATE_TEMPORARY.fullmatch(temporary.name):
            temporary.unlink()
    try:
        folder.rmdir()
    except OSError:
        pass


class EpochRecorder(keras.callbacks.Callback):
    """Adds each finished epoch to the run's state (and saves it, when the run has a checkpoint)."""

    def __init__(self, state: FitState, phase: str, best, checkpoint: Checkpoint | None,
                 early_stopping: keras.callbacks.EarlyStopping | None = None):
        super().__init__()
        self.state, self.phase, self.best, self.checkpoint = state, phase, best, checkpoint
        self.early_stopping = early_stopping

    def on_epoch_end(self, epoch, logs=None):
        state = self.state
        state.epoch = epoch + 1
        state.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                              "phase": self.phase})
        state.best = None if self.best.best == -math.inf else self.best.best
        state.best_epoch = self.best.best_epoch
        if self.early_stopping is not None:
            state.early_stopping = {"wait": int(self.early_stopping.wait), "best": self.early_stopping.best}
        if self.model.stop_training:       # early stopping ended the last phase: fitting is over
            state.finished = True
        if self.checkpoint is not None:
            self.checkpoint.save(state, self.model, self.best.weights)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that goes on counting where a stopped run left off (Keras's starts at zero)."""

    def __init__(self, *args, resume: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.resume = resume or {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.wait = self.resume.get("wait", 0)
        self.best = self.resume.get("best")


def _read_arrays(path: Path) -> list[np.ndarray]:
    try:
        with np.load(path) as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} cannot be read ({exc}); remove {path.parent.parent} to start the run "
                              "over.") from exc
