"""What every page shares: the cached predictor of the active model and the research notice."""
from __future__ import annotations

import streamlit as st

from skin_core import registry
from skin_core.bundle import BundleError, read_manifest

NOTICE = ("Research demo, not a medical device. It must not be used to diagnose, treat or reassure; "
          "any lesion of concern needs a clinician.")


@st.cache_resource(max_entries=3, show_spinner="Loading the model...")
def _predictor(path: str, model_checksum: str):
    from skin_core.predict import Predictor
    return Predictor.from_path(path)


def active_predictor():
    """The active bundle's predictor; if it cannot be loaded, the committed default with a warning."""
    path = registry.active_path()
    try:
        return _predictor(str(path), read_manifest(path)["files"]["model.keras"])
    except (BundleError, OSError) as exc:
        fallback = registry.models_dir() / registry.DEFAULT_NAME
        if path == fallback:
            st.error(f"The model cannot be loaded: {exc}")
            st.stop()
        st.warning(f"The active model could not be loaded ({exc}); serving the default model instead.")
        return _predictor(str(fallback), read_manifest(fallback)["files"]["model.keras"])


def notice() -> None:
    st.caption(f"⚠️ {NOTICE}")
