"""About: the model card, the data credit, licences and how to cite."""
import streamlit as st

from pages.common import notice
from skin_core import registry

st.title("ℹ️ About")
notice()
card = registry.active_path() / "MODEL_CARD.md"
if not card.is_file():
    card = registry.models_dir() / registry.DEFAULT_NAME / "MODEL_CARD.md"
st.markdown(card.read_text() if card.is_file() else "No model card was found for the active model.")
st.divider()
st.markdown("""
### Data
HAM10000: Tschandl, P., Rosendahl, C. & Kittler, H. *The HAM10000 dataset, a large collection of multi-source
dermatoscopic images of common pigmented skin lesions.* Scientific Data 5, 180161 (2018).
https://doi.org/10.1038/sdata.2018.161 — licence CC BY-NC 4.0: non-commercial use, credit the authors.

### Model
MobileNet V1 (Howard et al. 2017, arXiv:1704.04861) from `keras.applications`, starting from Google's ImageNet
weights (Apache-2.0), fine-tuned as described in the model card.

### Licences
The code of this demo is MIT licensed; the models trained on HAM10000 inherit its non-commercial terms.

### How to cite
Cite the HAM10000 paper above for the data and this repository for the software.
""")
