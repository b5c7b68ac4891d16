"""About: the model card, the data credit, licences and how to cite."""
import streamlit as st

from app_pages.common import default_path, notice, served_path
from skin_core.bundle import CARD_FILE, BundleError, read_manifest

st.title("ℹ️ About")
notice()
served, _ = served_path()          # the model Diagnose serves (the sidebar says when that is not the active one)
default_card = default_path() / CARD_FILE
if (served / CARD_FILE).is_file():
    st.markdown((served / CARD_FILE).read_text())
else:   # a run trained in the app has no card: say so, rather than show another model's as its own
    try:
        manifest = read_manifest(served)
    except BundleError as exc:
        st.error(f"The model served cannot be read: {exc}")
    else:
        st.markdown(f"# {manifest['name']}")
        st.info("The model served has no model card (models trained from the Retrain page have none). Its held-out "
                "figures are on the Evaluation page; the committed default model's card follows for reference.")
    if default_card.is_file():
        with st.expander("Model card of the committed default model"):
            st.markdown(default_card.read_text())
st.divider()
st.markdown("""
### Data
HAM10000: Tschandl, P., Rosendahl, C. & Kittler, H. *The HAM10000 dataset, a large collection of multi-source
dermatoscopic images of common pigmented skin lesions.* Scientific Data 5, 180161 (2018).
https://doi.org/10.1038/sdata.2018.161 — licence CC BY-NC 4.0: non-commercial use, credit the authors.

ISIC 2019 training images from BCN20000 (Barcelona) and MSK (New York), used by models trained on more than
HAM10000 (the model card lists each model's sources): Combalia, M. et al. *BCN20000: Dermoscopic lesions in the
wild.* arXiv:1908.02288 (2019); Codella, N. et al. *Skin lesion analysis toward melanoma detection: a challenge at
ISBI 2017.* arXiv:1710.05006 (2017); ISIC Archive, licence CC BY-NC 4.0.

### Model
MobileNet V1 (Howard et al. 2017, arXiv:1704.04861) from `keras.applications`, starting from Google's ImageNet
weights (Apache-2.0), fine-tuned as described in the model card; an ensemble serves several such networks side by
side and answers the mean of their outputs.

### Licences
The code of this demo is MIT licensed; models trained on these images inherit their non-commercial terms.

### How to cite
Cite the papers above for the data the served model was trained on and this repository for the software.
""")
