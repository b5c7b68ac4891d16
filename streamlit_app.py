"""Skin-lesion classifier demo: the entry point. Run with `streamlit run streamlit_app.py`."""
import streamlit as st

from skin_core import registry
from skin_core.bundle import BundleError, read_manifest
from app_pages.common import NOTICE, served_path

st.set_page_config(page_title="Skin lesion classifier (research demo)", page_icon="🔬", layout="wide")


def baseline_name(test: dict) -> str:
    """'always-nv' when the bundle records its test split's majority class (older ones do not)."""
    return f"always-{test['majority_class']}" if test.get("majority_class") else "majority-class"


def sidebar() -> None:
    with st.sidebar:
        st.markdown("### Active model")
        problem = registry.pointer_problem()
        if problem:
            st.warning(problem)
        path, damaged = served_path()
        if damaged:
            st.warning(f"The active model cannot be used ({damaged}); the default model is served instead.")
        try:
            manifest = read_manifest(path)
        except BundleError as exc:
            st.error(f"No usable active model: {exc}")
        else:
            st.markdown(f"**{manifest['name']}**")
            st.caption(f"Trained {(manifest['created'] or '?')[:10]} · MobileNet V1 α={manifest['alpha']} · "
                       f"{manifest['input_size']} px")
            test = manifest["test"]
            if test:
                st.caption(f"Held-out test ({test['n']} images): balanced accuracy {test['balanced_accuracy']:.2f}, "
                           f"macro F1 {test['macro_f1']:.2f}, accuracy {test['accuracy']:.2f} "
                           f"({baseline_name(test)} baseline {test['majority_baseline_accuracy']:.2f})")
        st.warning(NOTICE, icon="⚠️")


pages = [
    st.Page("app_pages/diagnose.py", title="Diagnose", icon="🔬", default=True),
    st.Page("app_pages/evaluation.py", title="Evaluation", icon="📊"),
    st.Page("app_pages/retrain.py", title="Retrain", icon="🛠️"),
    st.Page("app_pages/about.py", title="About", icon="ℹ️"),
]
navigation = st.navigation(pages)
sidebar()
navigation.run()
