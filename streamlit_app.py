"""Skin-lesion classifier demo: the entry point. Run with `streamlit run streamlit_app.py`."""
import streamlit as st

from skin_core import registry
from skin_core.bundle import BundleError, read_manifest
from skin_core.manifest import network_label
from app_pages.common import NOTICE, served_path

st.set_page_config(page_title="Skin lesion classifier (research demo)", page_icon="🔬", layout="wide")


def baseline_name(test: dict) -> str:
    """'always-nv' when the bundle records its test split's majority class (older ones do not)."""
    return f"always-{test['majority_class']}" if test.get("majority_class") else "majority-class"


def held_out_summary(test: dict) -> str:
    """The held-out test figures in a line, then each source's when there are several: one site's sharp photos
    and another's 84 px copies score very differently, and their mixture alone would hide both."""
    def figures(part: dict) -> str:
        return (f"balanced accuracy {part['balanced_accuracy']:.2f}, macro F1 {part['macro_f1']:.2f}, accuracy "
                f"{part['accuracy']:.2f} ({baseline_name(part)} baseline {part['majority_baseline_accuracy']:.2f})")

    lines = [f"Held-out test ({test['n']} images): {figures(test)}"]
    lines += [f"- {source} ({part['n']} images): {figures(part)}" for source, part in test.get("by_source", {}).items()]
    return "\n".join(lines)


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
            st.caption(f"Trained {(manifest['created'] or '?')[:10]} · {network_label(manifest)} · "
                       f"{manifest['input_size']} px")
            if manifest["test"]:
                st.caption(held_out_summary(manifest["test"]))
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
