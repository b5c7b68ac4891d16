"""What every page shares: the cached predictors, the admin password and the research notice."""
from __future__ import annotations

import json
from pathlib import Path
from stat import S_ISREG

import streamlit as st

from skin_core import NOTICE, access, registry
from skin_core.bundle import BundleError, read_manifest, verify_files



@st.cache_resource(max_entries=3, show_spinner="Loading the model...")
def _predictor(path: str, manifest_version: str):
    from skin_core.predict import Predictor
    return Predictor.from_path(path)


def predictor(path):
    """The predictor of the bundle at `path`, loaded once per version of its manifest, which lists every
    file's checksum and holds the calibration and thresholds: a bundle given a familiarity model or
    re-finished in place is loaded again, not served from the cache as it was."""
    manifest = read_manifest(path)
    return _predictor(str(path), json.dumps(manifest, sort_keys=True))


@st.cache_data(max_entries=8, show_spinner=False)
def _files_problem(path: str, stamp: tuple) -> str | None:
    try:
        verify_files(Path(path), read_manifest(path))
    except (BundleError, OSError) as exc:
        return str(exc)
    return None


def files_problem(path) -> str | None:
    """Why a bundle's files do not match their manifest checksums (None if they do): what makes the app
    serve the default instead. Hashed once per version of the files (names, sizes, modification times)."""
    stamp = []
    try:
        for entry in sorted(Path(path).iterdir()):       # one stat each: this runs on every page view
            info = entry.stat()
            if S_ISREG(info.st_mode):
                stamp.append((entry.name, info.st_size, info.st_mtime_ns))
    except OSError as exc:
        return f"{Path(path).name} cannot be read ({exc.strerror or exc})"
    return _files_problem(str(path), tuple(stamp))


def default_path() -> Path:
    return registry.models_dir() / registry.DEFAULT_NAME


def served_path() -> tuple[Path, str | None]:
    """The bundle the app serves and, when it is not the active one, why: one rule for the sidebar and the
    pages. A bundle whose files no longer match their checksums gives way to the committed default; this
    check is cheap enough for every page view (loading Keras is not, so a load failure is found by
    active_predictor alone)."""
    path, default = registry.active_path(), default_path()
    problem = files_problem(path) if path != default else None
    return (default, problem) if problem else (path, None)


def served_name() -> str:
    """The registry's name of the bundle the app serves (a promoted run's is its run id, not its folder's)."""
    return registry.DEFAULT_NAME if served_path()[1] else registry.active_name()


def active_predictor():
    """The served bundle's predictor; if it cannot be loaded, the committed default with a warning."""
    path, problem = served_path()
    if problem:
        st.warning(f"The active model could not be loaded ({problem}); serving the default model instead.")
    try:
        return predictor(path)
    except (BundleError, OSError) as exc:
        fallback = default_path()
        if path != fallback:
            st.warning(f"The active model could not be loaded ({exc}); serving the default model instead.")
            try:
                return predictor(fallback)
            except (BundleError, OSError) as fallback_exc:
                exc = fallback_exc
        st.error(f"The model cannot be loaded: {exc}")
        st.stop()


def secrets() -> dict:
    try:
        return dict(st.secrets)
    except Exception:   # no secrets.toml: Streamlit raises rather than returning {}
        return {}


def is_admin(key: str = "admin_password") -> bool:
    """True when no admin password is set, or when the one typed here matches it (`key`: one per box on a page)."""
    required = access.required_password(secrets())
    if not required:
        return True
    given = st.text_input("Admin password", type="password", key=key,
                          help="Launching, continuing, cancelling, promoting, rolling back and deleting models, and "
                               "saving evaluations beside them, need it on this server.")
    if given and not access.allowed(given, required):
        st.error("Wrong password.")
    return access.allowed(given, required)


def notice() -> None:
    st.caption(f"⚠️ {NOTICE}")
