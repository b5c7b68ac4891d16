"""JSON files that other processes read while they change (the active-model pointer, a run's job
record, a checkpoint's state, reports beside a bundle; also a bundle's added familiarity model): each
is replaced in one step, its new content on disk first, so a reader or a machine switched off meets the
old file or the new one, never half. And the one reader of such files: an object, or why it is not one."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np


def read_json_object(path) -> dict:
    """The JSON object in `path`, or a ValueError saying why there is none (missing, unreadable, not UTF-8 or
    JSON, not an object): every file skin_core reads back is an object, and a damaged one is a message."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path.name} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:             # JSONDecodeError and UnicodeDecodeError alike
        raise ValueError(f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path.name} does not hold a JSON object")
    return record


def json_object_or_none(path) -> dict | None:
    """The JSON object in `path`, or None where read_json_object would say why there is none (a lock or a
    record that is missing or being replaced is read as absent)."""
    try:
        return read_json_object(path)
    except ValueError:
        return None


def replace_json(path, record, *, indent: int | None = None, default=None) -> None:
    """Replace `path` with `record` as JSON in one step (`default` as json.dump's, e.g. `jsonable`)."""
    replace_file(path, lambda handle: json.dump(record, handle, indent=indent, default=default))


def replace_file(path, write, *, binary: bool = False) -> None:
    """Let `write(handle)` fill a temporary file beside `path`, sync it, then rename it over `path`."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")   # the usual permissions, unlike mkstemp
    try:
        with open(temporary, "xb" if binary else "x") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_to_disk(path.parent)


def sync_to_disk(path) -> None:
    """Push a file's data, or a folder's list of names (a rename into it, say), to the disk, not only to
    the page cache."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def jsonable(value):
    """numpy scalars as Python numbers; anything else json cannot write as its text."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)
