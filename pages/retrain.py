"""Retrain: launch, follow, cancel and promote a training run (being built)."""
import streamlit as st

from pages.common import notice

st.title("🛠️ Retrain")
notice()
st.info("Retraining from the browser is not available yet. Train from the command line with "
        "`python train.py --data DATASET --out models/NAME` (see the README); the Evaluation page lists the result.")
