"""Evaluation: how good a model is, on lesions it never trained on. Every number comes from the
bundle's evaluation.json (written by skin_core.evaluation); the page only draws it."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from app_pages.common import is_admin, notice, served_name
from skin_core import evaluation, evaluation_jobs, registry
from skin_core.robustness import ROBUSTNESS_FILE
from skin_core.bundle import (EVALUATION_FILE, HISTORY_FILE, BundleError, dataset_reports, read_manifest,
                               shares_split)
from skin_core.classes import full_name
from skin_core.jsonfiles import read_json_object

SHOWN = ("accuracy", "balanced_accuracy", "macro_f1", "top2_accuracy", "top3_accuracy")   # ECE has its own tab


def load(name: str):
    path = registry.bundle_path(name)
    manifest = read_manifest(path)
    try:
        report = read_json_object(path / EVALUATION_FILE) if (path / EVALUATION_FILE).is_file() else None
        history = pd.read_csv(path / HISTORY_FILE) if (path / HISTORY_FILE).is_file() else None
    except (ValueError, OSError) as exc:   # a damaged report: named, not a traceback
        raise BundleError(f"{name}: its evaluation report or training history cannot be read ({exc}).") from None
    return path, manifest, report, history


def robustness(path, key: str) -> None:
    file = path / ROBUSTNESS_FILE
    if not file.is_file():
        st.info("No robustness report for this model: `python scripts/robustness.py <bundle> --data <dataset>` "
                "writes one.")
        return
    try:
        report = read_json_object(file)
        rows = pd.DataFrame(report["conditions"])
    except (ValueError, KeyError, TypeError) as exc:   # damaged, or not the report's shape
        st.warning(f"The robustness report of this model cannot be read ({exc}).")
        return
    frame = rows.melt("condition", ["balanced_accuracy", "macro_f1"], var_name="metric")
    st.plotly_chart(px.bar(frame, x="condition", y="value", color="metric", barmode="group", height=380,
                           title=f"Held-out {report['subset']} split under altered photographs"),
                    key=f"rob-{key}")
    columns = ["description", "accuracy", "balanced_accuracy", "macro_f1", "mel_recall_at_threshold",
               "top_diagnosis_changed", "flagged_unfamiliar"]
    shown = rows.set_index("condition")[[c for c in columns if c in rows]]   # no melanoma column without mel cases
    shares = [c for c in ("top_diagnosis_changed", "flagged_unfamiliar") if c in shown]
    st.dataframe(shown.style.format(precision=3).format("{:.1%}", subset=shares))
    st.caption("Each row alters every held-out photograph one way before the model's own preparation; "
               "'top diagnosis changed' is the share whose first answer differs from the unaltered photograph's; "
               "'flagged unfamiliar' the share the Diagnose page would warn about as unlike the training images.")


def headline(report: dict) -> None:
    ci = report.get("ci95") or {}
    columns = st.columns(len(SHOWN) + 1)
    for column, metric in zip(columns, SHOWN):
        interval = ci.get(metric)
        column.metric(evaluation.METRIC_LABELS[metric], f"{report[metric]:.3f}",
                      help=f"95% CI {interval[0]:.3f}–{interval[1]:.3f} (bootstrap over lesions)" if interval else None)
        if interval:
            column.caption(f"95% CI {interval[0]:.3f}–{interval[1]:.3f}")
    columns[-1].metric("Majority baseline", f"{report['majority_baseline_accuracy']:.3f}",
                       help=f"Accuracy of always answering '{report.get('majority_class', 'nv')}'")
    columns[-1].caption(f"always '{report.get('majority_class', 'nv')}'")
    counts = ", ".join(f"{c} {n}" for c, n in report["class_counts"].items())
    held_out = " ".join(evaluation.other_dataset_notes(report)) or \
        "Splits are grouped by lesion, so no lesion seen in training or model selection is scored here."
    st.caption(f"{report['n']} images of {report.get('n_lesions', '?')} lesions ({counts}); "
               f"{report.get('dataset', 'held-out test split')}. {held_out} ECE {report['ece']:.3f}.")


def by_source(report: dict, key: str) -> dict:
    """A model trained on several collections: each one's figures side by side (each with its own always-nv
    baseline), and the report the tabs below draw: all sources, or one of them."""
    parts = report.get("by_source")
    if not parts:
        return report
    rows = []
    for source, part in parts.items():
        ci = part.get("ci95") or {}
        mel = part.get("operating_points", {}).get("mel", {})
        rows.append({"source": source, "images": part["n"], "lesions": part.get("n_lesions"),
                     "accuracy": part["accuracy"], "majority baseline": part["majority_baseline_accuracy"],
                     "balanced accuracy": part["balanced_accuracy"],
                     "bal. acc. 95% CI": "–".join(f"{v:.3f}" for v in ci.get("balanced_accuracy", [])),
                     "macro F1": part["macro_f1"], "macro F1 95% CI": "–".join(f"{v:.3f}" for v in ci.get("macro_f1", [])),
                     "top-3": part["top3_accuracy"], "ECE": part["ece"],
                     "melanoma sensitivity": mel.get("sensitivity"), "melanoma specificity": mel.get("specificity")})
    st.markdown("**By source** (each collection's held-out lesions on their own)")
    st.dataframe(pd.DataFrame(rows).set_index("source").style.format(precision=3, na_rep="–"), key=f"src-table-{key}")
    choice = st.radio("Show below", ["all sources", *parts], horizontal=True, key=f"src-{key}")
    if choice == "all sources":
        return report
    st.caption(f"The tabs below draw the {parts[choice]['n']} held-out images of {choice} only.")
    return parts[choice]


def confusion(report: dict, key: str) -> None:
    classes = report["classes"]
    matrix = np.array(report["confusion_matrix"], dtype=float)
    normalise = st.toggle("Row-normalised (recall)", key=f"norm-{key}")
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalise else matrix
    hover = [[f"true {full_name(t)}<br>predicted {full_name(p)}" for p in classes] for t in classes]
    figure = go.Figure(go.Heatmap(z=shown, x=classes, y=classes, colorscale="Blues", customdata=hover,
                                  text=np.round(shown, 2) if normalise else matrix.astype(int), texttemplate="%{text}",
                                  hovertemplate="%{customdata}<br>%{z}<extra></extra>"))
    figure.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed", height=450)
    st.plotly_chart(figure, key=f"cm-{key}")


def per_class(report: dict, key: str) -> pd.DataFrame:
    table = pd.DataFrame(report["per_class"]).T[["precision", "recall", "f1", "support", "auc"]]
    table.index = [f"{full_name(c)} ({c})" for c in table.index]
    aucs = evaluation.average_aucs(report)
    averages = pd.DataFrame([{**report["macro_avg"], "support": report["n"], "auc": aucs["macro"]},
                             {**report["weighted_avg"], "support": report["n"], "auc": aucs["weighted"]}],
                            index=["macro average", "weighted average"])
    full = pd.concat([table, averages])
    st.dataframe(full.style.format({"precision": "{:.3f}", "recall": "{:.3f}", "f1": "{:.3f}",
                                    "support": "{:.0f}", "auc": "{:.3f}"}, na_rep="–"), key=f"pc-{key}")
    bars = table[["precision", "recall", "f1"]].reset_index(names="class").melt("class", var_name="metric")
    st.plotly_chart(px.bar(bars, x="class", y="value", color="metric", barmode="group", range_y=[0, 1]),
                    key=f"pcb-{key}")
    return full


def roc_and_threshold(report: dict, manifest: dict, key: str) -> None:
    figure = go.Figure()
    for code, curve in report.get("roc", {}).items():
        auc = report["per_class"][code]["auc"]
        figure.add_trace(go.Scatter(x=curve["fpr"], y=curve["tpr"], name=f"{code} (AUC {auc:.3f})", mode="lines"))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], line=dict(dash="dot", color="grey"), showlegend=False))
    figure.update_layout(xaxis_title="false positive rate", yaxis_title="true positive rate", height=420)
    st.plotly_chart(figure, key=f"roc-{key}")
    predictions = report.get("predictions")
    if not predictions or "mel" not in report["classes"]:
        return
    st.markdown("**Melanoma operating point** — move the threshold to see what a triage rule would catch and miss.")
    y_true, probs = np.array(predictions["y_true"]), np.array(predictions["probs"])
    default = float(manifest["thresholds"].get("mel", 0.5))
    threshold = st.slider("Flag as possible melanoma when p(mel) ≥", 0.0, 1.0, round(default, 3), 0.005,
                          key=f"thr-{key}")
    point = evaluation.operating_point(y_true, probs, report["classes"].index("mel"), threshold)
    columns = st.columns(4)
    columns[0].metric("Sensitivity", f"{point['sensitivity']:.3f}" if point["sensitivity"] is not None else "–")
    columns[1].metric("Specificity", f"{point['specificity']:.3f}" if point["specificity"] is not None else "–")
    columns[2].metric("Melanomas missed", point["fn"])
    columns[3].metric("False alarms", point["fp"])
    st.caption(f"The model's stored threshold is {default:.3f}, chosen on the validation split. "
               f"At {threshold:.3f}: {point['tp']} melanomas flagged, {point['fn']} missed, "
               f"{point['fp']} other lesions flagged, {point['tn']} correctly left alone.")


def calibration(report: dict, key: str) -> None:
    bins = pd.DataFrame([b for b in report["reliability"] if b["count"]])
    figure = go.Figure([go.Bar(x=bins["confidence"], y=bins["accuracy"], width=1 / len(report["reliability"]),
                               name="accuracy in bin", customdata=bins["count"],
                               hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} images"),
                        go.Scatter(x=[0, 1], y=[0, 1], name="perfect calibration", line=dict(dash="dot"))])
    figure.update_layout(xaxis_title="confidence (top probability)", yaxis_title="accuracy", height=400,
                         xaxis_range=[0, 1], yaxis_range=[0, 1])
    st.plotly_chart(figure, key=f"rel-{key}")
    st.caption(f"Expected calibration error (15 bins): {report['ece']:.3f}. This measures the top answer's "
               "confidence only; below, each class's own probabilities.")
    predictions = report.get("predictions")
    if not predictions:
        return
    classes = report["classes"]
    code = st.selectbox("Class", classes, index=classes.index("mel") if "mel" in classes else 0,
                        format_func=lambda c: f"{full_name(c)} ({c})", key=f"relc-{key}")
    curve = evaluation.class_reliability(np.array(predictions["y_true"]), np.array(predictions["probs"]),
                                         classes.index(code))
    figure = go.Figure([go.Scatter(x=curve["predicted"], y=curve["observed"], mode="lines+markers",
                                   name=f"{code}: observed share",
                                   hovertemplate="given %{x:.2f}<br>truly " + code + " %{y:.2f}<extra></extra>"),
                        go.Scatter(x=[0, 1], y=[0, 1], name="perfect calibration", line=dict(dash="dot"))])
    figure.update_layout(xaxis_title=f"probability given to {full_name(code)}",
                         yaxis_title=f"share that is truly {full_name(code)}", height=400,
                         xaxis_range=[0, 1], yaxis_range=[0, 1])
    st.plotly_chart(figure, key=f"relc-chart-{key}")
    st.caption(f"Ten bins of equal size. Mean probability given to {full_name(code)}: {curve['mean_probability']:.3f}; "
               f"its share of these images: {curve['prevalence']:.3f}. Points below the diagonal mean the model's "
               f"{full_name(code)} probabilities run high, as class weighting in training makes a rare class's.")


def curves(history: pd.DataFrame | None, manifest: dict, key: str) -> None:
    if history is None:
        averaged, members = manifest["training"].get("weights_averaged_with"), manifest["training"].get("ensemble_of")
        if members:
            st.info(f"This model joins the networks {' and '.join(members)}, trained separately, and answers the mean "
                    "of their outputs, so it has no training curves of its own (the model card gives each network's "
                    "training).")
        else:
            st.info(f"This model's weights were averaged with those of {', '.join(averaged)} (a weight soup), so it "
                    "has no training curves of its own." if averaged else "This bundle has no training history.")
        return
    for metric, label in (("loss", "Loss"), ("accuracy", "Categorical accuracy"), ("top2", "Top-2 accuracy"),
                          ("top3", "Top-3 accuracy")):
        if metric not in history:
            continue
        frame = history[["epoch", metric] + ([f"val_{metric}"] if f"val_{metric}" in history else [])]
        frame = frame.rename(columns={metric: "training", f"val_{metric}": "validation"}).melt("epoch", var_name="split")
        st.plotly_chart(px.line(frame, x="epoch", y="value", color="split", title=label, markers=True, height=300),
                        key=f"hist-{metric}-{key}")


def patients_note(manifest: dict) -> None:
    """For a model that reads age, sex and body site: its figures used them, and what it scores without them."""
    recorded = manifest["patients"]
    if not recorded:
        return
    st.info("This model also reads the patient's age, sex and body site, and these figures used each image's "
            f"recorded details. Given the photo alone it scores {evaluation.photo_alone_figures(manifest)}.")


def show(name: str, key: str) -> None:
    try:
        path, manifest, report, history = load(name)
    except BundleError as exc:
        st.error(str(exc))
        return
    st.markdown(f"#### {manifest['name']}")
    if report is None:
        st.info("This bundle has no evaluation report.")
        curves(history, manifest, key)
        return
    headline(report)
    copies = evaluation.test_copies_note(manifest)
    if copies:
        st.caption(copies)
    patients_note(manifest)
    report = by_source(report, key)
    tabs = st.tabs(["Confusion matrix", "Per class", "ROC & threshold", "Calibration", "Training curves",
                    "Robustness", "Download"])
    with tabs[0]:
        confusion(report, key)
    with tabs[1]:
        table = per_class(report, key)
    with tabs[2]:
        roc_and_threshold(report, manifest, key)
    with tabs[3]:
        calibration(report, key)
    with tabs[4]:
        curves(history, manifest, key)
    with tabs[5]:
        robustness(path, key)
    with tabs[6]:
        st.download_button("Per-class table (CSV)", table.to_csv(), file_name=f"{name}_per_class.csv", key=f"csv-{key}")
        st.download_button("Full report (JSON)", json.dumps(report), file_name=f"{name}_evaluation.json",
                           key=f"json-{key}")
    saved_dataset_reports(path, key)
    other_dataset(path, manifest, key)


def saved_dataset_reports(path, key: str) -> None:
    """Evaluations on other datasets saved beside the bundle earlier, shown as the test split's are."""
    reports, damaged = dataset_reports(path)
    for name in damaged:
        st.warning(f"{name} beside this bundle cannot be read as an evaluation report.")
    if not reports:
        return
    with st.expander(f"Saved evaluations on other datasets ({len(reports)})"):
        name = st.selectbox("Report", list(reports), key=f"saved-{key}",
                            format_func=lambda n: f"{reports[n].get('dataset', n)} ({n})")
        report = reports[name]
        headline(report)
        confusion(report, f"{key}-saved")
        per_class(report, f"{key}-saved")


def other_dataset(path, manifest, key: str) -> None:
    """Evaluating another dataset runs in a process of its own (skin_core.evaluation_jobs): a large one takes
    minutes, and the page may be left or reloaded meanwhile."""
    job = evaluation_jobs.latest(path)
    told = st.session_state.get(f"told-{key}")
    news = job is not None and time.time() - (job.ended or 0) < 600 and told != job.job_id
    if job is not None and (job.status == "running" or news):
        st.session_state[f"other-{key}"] = True     # open while it runs, and once more to tell how it ended
        if job.status != "running":
            st.session_state[f"told-{key}"] = job.job_id
    with st.expander("Evaluate on another labelled dataset", key=f"other-{key}", on_change="rerun"):
        folder = st.text_input("Dataset folder on the server (HAM10000 layout, an ISIC, Derm7pt or PH2 download "
                               "as it comes, or one folder per class)",
                               key=f"ds-{key}")
        leave_out = st.checkbox("Leave out images that cannot be used: missing, unreadable, labelled beyond the "
                                "seven classes (e.g. ISIC's SCC) or, in an ISIC export, not dermoscopy; the report "
                                "counts them", key=f"skip-{key}")
        admin = is_admin(f"admin-{key}")   # the result is saved beside the bundle
        if st.button("Evaluate", key=f"go-{key}", disabled=not admin) and folder:
            from skin_core.data import DatasetError
            try:
                with st.spinner("Checking the dataset..."):
                    job = evaluation_jobs.state(evaluation_jobs.start(path, folder, leave_out=leave_out))
            except (DatasetError, BundleError, evaluation_jobs.EvaluationJobError) as exc:
                st.error(str(exc))
                return
        if job is None:
            return
        if job.status == "running":
            follow_evaluation(job.job_id, key, admin)
        else:
            last_evaluation(job, path, key)


@st.fragment(run_every=2)
def follow_evaluation(job_id: str, key: str, admin: bool) -> None:
    try:
        job = evaluation_jobs.state(job_id)
    except evaluation_jobs.EvaluationJobError as exc:     # its record damaged or removed meanwhile
        st.error(str(exc))
        return
    if job.status != "running":
        st.rerun(scope="app")            # the whole page, so its saved reports include the new one
    st.progress(job.progress, f"Evaluating {job.dataset}: {job.step}")
    st.caption("This runs on the server by itself: you may leave this page and come back.")
    if st.button("Cancel the evaluation", key=f"cancel-{key}", disabled=not admin):
        try:
            evaluation_jobs.cancel(job_id)
        except evaluation_jobs.EvaluationJobError as exc:
            st.error(str(exc))
            return
        st.rerun(scope="app")


def last_evaluation(job, path, key: str) -> None:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.started))
    if job.status == "cancelled":
        st.info(f"The evaluation of {job.dataset} started {when} was cancelled; nothing was saved.")
    elif job.status == "failed":
        st.error(f"The evaluation of {job.dataset} started {when} failed: {job.error}")
    else:
        reports, _ = dataset_reports(path)
        st.success(f"Evaluated {job.dataset} (started {when}). Saved as {job.report_name} beside the bundle.")
        if job.report_name in reports:
            headline(reports[job.report_name])


st.title("📊 Evaluation")
notice()
names = registry.list_bundles()
if not names:
    st.error("No model bundles found in models/.")
    st.stop()
active = served_name()                 # the model Diagnose serves is shown first
compare = st.toggle("Compare two models side by side")
if compare and len(names) > 1:
    first, second = st.columns(2)
    with first:
        model_a = st.selectbox("Model A", names, index=names.index(active) if active in names else 0)
    with second:
        model_b = st.selectbox("Model B", names, index=1 if names[0] == active or active not in names else 0)
    if shares_split(registry.bundle_path(model_a), registry.bundle_path(model_b)):
        st.caption("Both models were tested on the same held-out lesions. These test figures are for reporting: "
                   "choosing between models on them makes the chosen one look better than it is; choose on "
                   "validation (Retrain page, or `scripts/compare_on_validation.py`).")
    else:
        st.warning("These models were tested on different lesions (their split.csv files differ), so their "
                   "figures are not a like-for-like comparison.")
    with first:
        show(model_a, "a")
    with second:
        show(model_b, "b")
else:
    if compare:
        st.info("Only one model bundle exists.")
    show(st.selectbox("Model", names, index=names.index(active) if active in names else 0), "main")
