"""Diagnose: upload or photograph a lesion, see the class probabilities and where the model looked."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from app_pages.common import active_predictor, notice
from skin_core import explain, images, lesion, patients, report
from skin_core.bundle import SPLIT_FILE
from skin_core.splits import sample_examples
from skin_core.classes import BY_CODE, full_name

SEVERITY = {"melanoma": "error", "malignant": "error", "uncertain": "warning"}


SEEN_AS = {"train": "used to train this model", "val": "used to tune this model",
           "test": "held out from this model"}


def example_images(bundle) -> list[tuple[str, Path, str | None]]:
    """One sample image per class from sample_data/, for a one-click first result, with what the shown
    model did with it (an answer on an image it trained on is no test of it)."""
    return [(f"{full_name(dx)} ({path.stem})", path, SEEN_AS.get(subset))
            for dx, path, subset in sample_examples(bundle.path / SPLIT_FILE)]


def safe_label(name: str) -> str:
    """A file name as the user may see it: printable, no path, bounded length."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch if ch.isprintable() else "?" for ch in name)[:80] or "image"


def probability_chart(ranked: list[tuple[str, float]]) -> go.Figure:
    labels = [f"{full_name(c)} ({c}) {'● malignant' if BY_CODE[c].malignant else '○ benign'}" for c, _ in ranked]
    values = [p for _, p in ranked]
    colours = ["#c0392b" if BY_CODE[c].malignant else "#2e86c1" for c, _ in ranked]
    figure = go.Figure(go.Bar(x=values[::-1], y=labels[::-1], orientation="h", marker_color=colours[::-1],
                              text=[f"{p:.1%}" for p in values[::-1]], textposition="outside",
                              hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    figure.update_layout(xaxis=dict(range=[0, 1.15], tickformat=".0%", title="probability"),
                         height=320, margin=dict(l=10, r=10, t=10, b=10))
    return figure


NOT_GIVEN = "not given"


def patient_form(predictor) -> dict | None:
    """The patient's age, sex and body site, all optional, for a model trained to read them (None: nothing
    entered). They apply to every photo on the page: one patient at a time."""
    if predictor.patient_head is None:
        return None
    with st.expander("Patient details (optional): age, sex and body site", expanded=True):
        st.caption("This model also reads the patient's age, sex and where the lesion is, as a dermatologist would. "
                   "Leave any of them out and it answers without it. They apply to every photo below, so enter one "
                   "patient's lesions at a time. In the training data they are tied to the clinics that took the photos, so "
                   "their weight may differ in another population.")
        age_column, sex_column, site_column = st.columns(3)
        age = age_column.number_input("Age (years)", min_value=0, max_value=120, value=None, step=1,
                                      placeholder=NOT_GIVEN, key="patient-age")
        sex = sex_column.selectbox("Sex", (NOT_GIVEN,) + patients.SEXES, key="patient-sex")
        site = site_column.selectbox("Body site", (NOT_GIVEN,) + patients.SITES, key="patient-site")
    patient = patients.check(age, None if sex == NOT_GIVEN else sex, None if site == NOT_GIVEN else site)
    return patient if any(value is not None for value in patient.values()) else None


def answered_from(analysis, predictor) -> str | None:
    """One line on what the answer used, for a model that can read the patient's details."""
    if predictor.patient_head is None:
        return None
    if analysis.patient is None:
        return "Answered from the photo alone (no patient details entered above)."
    given = [f"age {analysis.patient['age']:g}" if analysis.patient["age"] is not None else None,
             analysis.patient["sex"], analysis.patient["localization"]]
    return "Answered from the photo and " + ", ".join(g for g in given if g) + "."


ANALYSES_KEPT = 16   # answers a session keeps beyond the photos on the page (earlier uploads, other details)


def analysed(data: bytes, predictor, patient: dict | None, on_page: int):
    """One upload's analysis and its findings, computed once per photo, served model and patient details: any
    later rerun of the page (another upload, a widget, a download) draws from here. The least recently used
    answers go first, and never one of the `on_page` photos shown now, however many there are. Raises
    images.ImageError."""
    manifest = predictor.bundle.manifest
    key = (str(predictor.bundle.path), manifest["created"], json.dumps(manifest["files"], sort_keys=True),
           hashlib.sha256(data).hexdigest(), json.dumps(patient, sort_keys=True))
    kept = st.session_state.setdefault("analyses", {})
    if key in kept:
        kept[key] = kept.pop(key)                       # now the most recently used
    else:
        analysis = predictor.analyse(images.decode(data), patient)
        kept[key] = analysis, report.findings(analysis, predictor.bundle.thresholds)
        while len(kept) > max(ANALYSES_KEPT, on_page):
            kept.pop(next(iter(kept)))
    return kept[key]


@st.fragment
def heat_map(key: str, analysis, predictor) -> None:
    """The Grad-CAM view; a fragment, so that choosing another class or opacity redraws this view alone."""
    ranked, decoded = analysis.ranked(), analysis.decoded
    explained = st.selectbox("Explain class", [c for c, _ in ranked], key=f"cls-{key}",
                             format_func=lambda c: f"{full_name(c)} ({c})")
    opacity = st.slider("Heat-map opacity", 0.0, 1.0, 0.45, 0.05, key=f"op-{key}")
    square = explain.display_square(decoded.rgb)
    overlay = explain.overlay(square, analysis.cam(explained), opacity)
    explained_p = analysis.as_dict()[explained]
    detail = images.detail_seen(decoded.rgb, predictor.input_size, predictor.detail_side)
    st.image([square, overlay], caption=[f"Centre square (the model sees {detail} px of its detail)",
                                         f"Grad-CAM for {full_name(explained)} ({explained_p:.0%})"], width=260)
    if explained != ranked[0][0]:
        st.caption(f"Each map is scaled to its own peak: this one shows where the model would look for "
                   f"{full_name(explained)}, not that it is likely ({explained_p:.0%}).")
    st.download_button("Download overlay (PNG)", explain.png_bytes(overlay), file_name=f"gradcam_{explained}.png",
                       mime="image/png", key=f"png-{key}")


def show_answer(ranked: list[tuple[str, float]], key: str, used: str | None, findings) -> None:
    """The answer itself: the top class, every class's probability, the top three and the flags on it."""
    top_code, top_p = ranked[0]
    st.markdown(f"**Most likely: {full_name(top_code)}** ({top_p:.0%}) — {BY_CODE[top_code].description}")
    st.plotly_chart(probability_chart(ranked), key=f"chart-{key}")
    st.markdown("**Top 3:** " + " · ".join(f"{i}. {full_name(c)} {p:.0%}" for i, (c, p) in enumerate(ranked[:3], 1)))
    if used:
        st.caption(used)
    for finding in findings:
        getattr(st, SEVERITY.get(finding.code, "info"))(finding.message)


def show_lesion(inputs: list[tuple[str, bytes]], predictor, patient: dict | None) -> None:
    """One answer for all the photos, which the user says show one lesion (skin_core.lesion)."""
    photos, flags = [], []
    for label, data in inputs:
        try:
            analysis, (_, photo_findings) = analysed(data, predictor, patient, len(inputs))
        except images.ImageError:
            continue                  # its own section below says why
        photos.append((label, analysis))
        flags.append(photo_findings)
    st.subheader(f"One lesion: {len(photos)} photos answered together")
    if len(photos) < lesion.SMALLEST:
        st.info("Fewer than two of these files are photos the model can read, so there is no combined answer.")
        return
    answer = lesion.combine(predictor, photos)
    found = lesion.findings(answer, photos, predictor.bundle.thresholds, flags)
    st.caption("The photos' answers are averaged before calibration, as the views of one photo are, and calibrated "
               "as one photo's answer is. Each photo's own answer and heat map follow below. Only photos of the same "
               "lesion belong together: the combined answer speaks for none of them otherwise.")
    show_answer(answer.ranked(), "lesion", answered_from(photos[0][1], predictor), found)
    st.download_button("Download combined report (JSON)",
                       json.dumps(report.combined_report(answer, photos[0][1].patient, predictor.bundle, found),
                                  indent=2),
                       file_name="lesion_combined_report.json", mime="application/json", key="json-lesion")


def show_result(index: int, label: str, data: bytes, predictor, patient: dict | None, on_page: int) -> None:
    st.subheader(label)
    try:
        analysis, found = analysed(data, predictor, patient, on_page)
    except images.ImageError as exc:
        st.error(f"Cannot use this file: {exc}", icon="🚫")
        return
    ranked = analysis.ranked()
    model_findings, photo_findings = found
    key = f"{index}-{hashlib.sha1(data).hexdigest()[:10]}"
    left, right = st.columns([1, 1.25])
    with left:
        heat_map(key, analysis, predictor)
        for note in analysis.decoded.notes:
            st.caption(note)
    with right:
        show_answer(ranked, key, answered_from(analysis, predictor), model_findings)
        if photo_findings:
            st.warning("This photo looks unlike the dermoscopy images the model learned from, so its answer "
                       "deserves less trust:\n" + "\n".join(f"- {f.message}" for f in photo_findings))
        st.download_button("Download report (JSON)",
                           json.dumps(report.lesion_report(label, analysis, predictor.bundle, found), indent=2),
                           file_name="lesion_report.json", mime="application/json", key=f"json-{key}")


st.title("🔬 Diagnose")
notice()
predictor = active_predictor()
st.write("Upload one or more dermatoscopic photos (or take one). The model gives probabilities for the seven "
         "HAM10000 classes and a Grad-CAM heat map of the regions that drove its answer. Uploads stay in memory "
         "and are never stored.")
class_balanced = predictor.bundle.manifest["training"].get("balance", "none") != "none"
st.caption("The confidence of the top answer is calibrated on held-out lesions. "
           + ("This model was trained with class balancing, which lifts the rarer classes' probabilities, so they "
              "tend to run high (Evaluation → Calibration shows each class's); " if class_balanced else
              "Evaluation → Calibration shows how each class's probabilities match what the lesions were; ")
           + "all of them reflect the training collections' mix of lesions, not a clinic's.")

patient = patient_form(predictor)
upload_tab, camera_tab, example_tab = st.tabs(["Upload", "Camera", "Examples"])
inputs: list[tuple[str, bytes]] = []
with upload_tab:
    files = st.file_uploader("Dermatoscopic photos", type=list(images.UPLOAD_EXTENSIONS), accept_multiple_files=True)
    inputs += [(safe_label(f.name), f.getvalue()) for f in files or []]
with camera_tab:
    shot = st.camera_input("Take a photo through a dermatoscope")
    if shot is not None:
        inputs.append(("camera photo", shot.getvalue()))
with example_tab:
    st.caption("Real HAM10000 images (Tschandl et al. 2018, CC BY-NC 4.0), one per class, from this model's "
               "held-out test lesions where the samples have one. Those the model trained or was tuned on are "
               "marked: its answer on them shows how it works, not how good it is.")
    examples = example_images(predictor.bundle)
    columns = st.columns(max(len(examples), 1))
    for column, (name, path, seen) in zip(columns, examples):
        with column:
            st.image(str(path), width="stretch", caption=seen)
            if st.button("Try", key=f"ex-{path.stem}", help=f"{name}, {seen}" if seen else name):
                st.session_state["example"] = str(path)
    if st.session_state.get("example"):
        chosen = Path(st.session_state["example"])
        if st.button(f"Clear example {chosen.stem}", key="clear-example",
                     help="Examples stay below the user's own photos until cleared."):
            del st.session_state["example"]
            st.rerun()
        inputs.append((f"example {chosen.stem}", chosen.read_bytes()))

if not inputs:
    st.info("Choose a photo to begin, or try one of the examples.")
if len(inputs) >= lesion.SMALLEST and st.checkbox(
        "These photos show one lesion: also answer them together", key="one-lesion",
        help="Two or three dermoscopic photos of one lesion, answered as one. For the default model, on held-out "
             "lesions photographed more than once, this did a little better than each photo alone. Leave it off "
             "for photos of different lesions."):
    st.divider()
    show_lesion(inputs, predictor, patient)
for index, (label, data) in enumerate(inputs):
    st.divider()
    show_result(index, label, data, predictor, patient, len(inputs))
