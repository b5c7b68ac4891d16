"""The models/ folder: which bundles exist and which one the app serves.

The active model is named by a small pointer file, models/runs/active.json, replaced atomically
(write a temporary file, then os.replace), so a reader sees either the old or the new pointer,
never half of one. Without a pointer the committed models/default is active. The pointer lives in
runs/ beside the runs it names, so a deployment that keeps only that folder (a container's volume)
keeps its choice of model too.
"""
from __future__ import annotations

import os
from pathlib import Path

from .bundle import BundleError, load_bundle, read_manifest, restore_interrupted_replacement
from .jsonfiles import json_object_or_none, replace_json

DEFAULT_NAME = "default"
POINTER = Path("runs") / "active.json"


def models_dir() -> Path:
    return Path(os.environ.get("SKIN_MODELS_DIR", Path(__file__).resolve().parents[1] / "models"))


def _read_pointer(root: Path) -> dict:
    return _pointer_at(root / POINTER) or {"active": DEFAULT_NAME, "previous": []}


def _pointer_at(path: Path) -> dict | None:
    """The pointer in `path`, or None when it is missing or is not one (pointer_problem says which)."""
    pointer = json_object_or_none(path)          # None: missing, unreadable, not UTF-8, not JSON
    if pointer is None or not isinstance(pointer.get("active"), str) or not pointer["active"]:
        return None
    previous = pointer.get("previous")
    return {"active": pointer["active"],
            "previous": [p for p in previous if isinstance(p, str)] if isinstance(previous, list) else []}


def pointer_problem(root: Path | None = None) -> str | None:
    """Why the active-model pointer is being ignored (a damaged file: the app must say so rather than
    quietly serve another model), or None."""
    root = root or models_dir()
    if not (root / POINTER).exists() or _pointer_at(root / POINTER) is not None:
        return None
    return (f"The active-model pointer {POINTER} cannot be read, so {active_name(root)} is served; "
            "promote a model on the Retrain page (or remove the file) to set it again.")


def _write_pointer(root: Path, pointer: dict) -> None:
    try:
        (root / POINTER).parent.mkdir(parents=True, exist_ok=True)
        replace_json(root / POINTER, pointer)
    except OSError as exc:
        raise BundleError(f"Could not update the active model pointer: {exc.strerror or exc}") from None


def bundle_path(name: str, root: Path | None = None) -> Path:
    """models/<name>, or the bundle a retraining run wrote in models/runs/<name>/bundle."""
    root = root or models_dir()
    restore_interrupted_replacement(root / name)      # models/<name> left retired by a killed replacement
    return root / name if (root / name / "manifest.json").exists() else root / "runs" / name / "bundle"


def list_bundles(root: Path | None = None) -> list[str]:
    """Names of readable bundles: models/<name> and the finished runs in models/runs/<name>."""
    root = root or models_dir()
    names = []
    candidates = [(f.name, f) for f in sorted(root.glob("*"))] + \
                 [(f.parent.name, f) for f in sorted(root.glob("runs/*/bundle"))]
    for name, folder in candidates:
        if folder.is_dir() and not name.startswith("."):
            try:
                read_manifest(folder)
                names.append(name)
            except BundleError:
                continue
    return names


def active_name(root: Path | None = None) -> str:
    return _read_pointer(root or models_dir())["active"]


def active_path(root: Path | None = None) -> Path:
    return bundle_path(active_name(root), root)


def promote(name: str, root: Path | None = None) -> None:
    """Make a bundle the active model; the old one is remembered for roll-back.

    The bundle is loaded and checked in full first (manifest, checksums, the model itself), so a
    folder the app could not serve is refused here, with its problem named, and the pointer is untouched.
    """
    root = root or models_dir()
    load_bundle(bundle_path(name, root))
    pointer = _read_pointer(root)
    if pointer["active"] != name or pointer_problem(root):      # promoting also replaces a damaged pointer
        earlier = [pointer["active"]] if pointer["active"] != name else []
        pointer = {"active": name, "previous": (pointer.get("previous", []) + earlier)[-20:]}
        _write_pointer(root, pointer)


def rollback(root: Path | None = None) -> str:
    """Go back to the model that was active before the last promotion; returns its name."""
    root = root or models_dir()
    pointer = _read_pointer(root)
    previous = [p for p in pointer.get("previous", []) if (bundle_path(p, root) / "manifest.json").exists()]
    if not previous:
        raise BundleError("There is no earlier active model to roll back to.")
    _write_pointer(root, {"active": previous[-1], "previous": previous[:-1]})
    return previous[-1]
