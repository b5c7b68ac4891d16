"""Retrain: launch a training run on a dataset, follow it live, cancel it, compare and promote."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from app_pages.common import is_admin, notice
from skin_core import jobs, launch, options, registry
from skin_core.bundle import BundleError, read_manifest, shares_split
from skin_core.data import SAMPLE_DIR, DatasetError, load_datasets
from skin_core.evaluation import METRIC_LABELS
from skin_core.run_config import default_of, help_of


@st.fragment(run_every=2)
def follow(run_id: str, admin: bool) -> None:
    try:
        state = jobs.state(run_id)
    except jobs.JobError as exc:
        st.error(str(exc))
        return
    st.markdown(f"**{run_id}** — {state.status}")
    batch = state.last_batch
    if batch:
        epoch, epochs = batch["epoch"], batch["epochs"]
        share = ((epoch - 1) + batch.get("batch", batch.get("batches", 1)) / max(batch.get("batches", 1), 1)) / epochs \
            if batch["event"] == "batch" else epoch / epochs
        eta = batch.get("eta_s")
        st.progress(min(share, 1.0), f"epoch {epoch}/{epochs}" + (f", batch {batch['batch']}/{batch['batches']}"
                                                                    if batch["event"] == "batch" else "")
                    + (f" — about {eta / 60:.1f} min left" if eta else ""))
    else:
        st.progress(0.0, "Reading the dataset...")
    show_curves(state)
    st.code(jobs.log_tail(run_id, 12) or "(no output yet)", language=None)
    if state.status == "running":
        if st.button("Cancel this run", disabled=not admin, key="cancel"):
            try:
                jobs.cancel(run_id)
            except jobs.JobError as exc:
                st.error(str(exc))
                return
            st.rerun(scope="app")
    else:
        st.rerun(scope="app")


def show_curves(state: jobs.JobState) -> None:
    epochs = [{"epoch": e["epoch"], **e["metrics"]} for e in state.events if e["event"] == "epoch"]
    if not epochs:
        return
    frame = pd.DataFrame(epochs).drop_duplicates("epoch", keep="last")   # an epoch redone after a restart
    columns = [c for c in ("loss", "val_loss", "accuracy", "val_accuracy") if c in frame]
    st.plotly_chart(px.line(frame.melt("epoch", columns), x="epoch", y="value", color="variable", markers=True,
                            height=300), key=f"curves-{state.run_id}-{len(epochs)}")


def launch_form(admin: bool) -> None:
    st.subheader("Launch a training run")
    source = st.radio("Dataset", ["Shipped sample (70 images)", "Folders on the server"], horizontal=True)
    written = "" if source.startswith("Shipped") else st.text_area(
        "Dataset folders, one per line", height=90, disabled=not admin,
        help="Each in HAM10000's layout (metadata CSV + images), an ISIC download (its ground-truth or metadata "
             "CSV + images), Derm7pt's release or one sub-folder per class. Several train as one: each image keeps "
             "its source (the folder's name), each source is split by lesion on its own and the test report gives "
             "every source's figures.")
    folders = [str(SAMPLE_DIR)] if source.startswith("Shipped") else \
        [line.strip() for line in written.splitlines() if line.strip()]
    leave_out = st.checkbox("Leave out images labelled beyond the seven classes (e.g. ISIC's SCC) or, in an ISIC "
                            "export, not dermoscopy", default_of("skip_other_labels"),
                            help=help_of("skip_other_labels"), disabled=not admin)
    dataset_ok = False
    if folders and admin:      # the server's folders are read for signed-in users only
        try:
            dataset = load_datasets(folders, skip_other_labels=leave_out)
        except DatasetError as exc:
            st.error(f"This dataset cannot be used: {exc}")
        else:
            dataset_ok = True
            counts = dataset.counts()
            left_out = f"; {len(dataset.skipped)} left out as asked" if dataset.skipped else ""
            sources = dataset.table["source"].value_counts(sort=False)
            by_source = f" from {len(sources)} sources ({', '.join(f'{s} {n}' for s, n in sources.items())})" \
                if len(sources) > 1 else ""
            st.caption(f"{len(dataset.table)} images of {dataset.table['lesion_id'].nunique()} lesions{by_source} "
                       f"({dataset.layout} layout): " + ", ".join(f"{c} {n}" for c, n in counts.items()) + left_out)
    with st.form("launch"):
        starts = launch.start_choices(registry.active_path())
        start_from = st.selectbox("Start from", list(starts), format_func=starts.get,
                                  help="ImageNet weights download once on a connected machine. The active model's "
                                       "weights are continued at its own input size and width; an active model of "
                                       "several networks side by side is continued one network at a time.")
        left, middle, right = st.columns(3)
        epochs = left.number_input("Epochs", 1, 200, 5,
                                   help="Total epochs, including 2 for the new head. Early stopping watches only "
                                        "the second half: early peaks at a high learning rate are noisy")
        # epochs, input size, width and batch start small so that a run finishes on a CPU in minutes
        img_size = middle.select_slider("Input size", [96, 128, 160, 192, 224], 128, help=help_of("img_size"))
        alpha = right.select_slider("Width (alpha)", [0.25, 0.5, 0.75, 1.0], 0.25,
                                    help="MobileNet width: 0.25 trains fast on a CPU, 1.0 is the default model's")
        batch = left.number_input("Batch size", 4, 256, 16, help=help_of("batch_size"))
        lr = middle.number_input("Learning rate", 1e-6, 1e-1, default_of("lr"), format="%.6f", help=help_of("lr"))
        seed = right.number_input("Seed", 0, 10_000, default_of("seed"), help=help_of("seed"))
        augment = left.checkbox("Augmentation (rotation, flips, zoom, ±10% light)", default_of("augment"))
        photometric = middle.checkbox("Camera differences (light, colour, sharpness)", default_of("photometric"),
                                      help=help_of("photometric"))
        compression = right.checkbox("JPEG re-saving (phone and web copies)", default_of("compression"),
                                     help=help_of("compression"))
        with st.expander("Advanced: options the experiments tried and did not adopt (docs/experiments.md)"):
            left, middle, right = st.columns(3)
            balance = left.selectbox("Class balancing", options.BALANCE_CHOICES, help=help_of("balance"))
            mix = middle.selectbox("Label mixing", options.MIX_CHOICES, help=help_of("mix"))
            colour_constancy = right.checkbox("Even out white balance and exposure", default_of("colour_constancy"),
                                              help=help_of("colour_constancy"))
        with_patients = st.checkbox("Also learn from age, sex and body site", default_of("patients"),
                                    help=help_of("patients"))
        same_lesions = st.checkbox(
            "Hold out the active model's validation and test lesions", False,
            help="Reuse the active model's split (every image of this dataset must be listed in the active "
                 "model's split.csv: its training dataset or part of it), so no lesion it was validated or tested "
                 "on is trained on. On the very dataset the active model was trained on, the new model is tested "
                 "on the same lesions and the comparison below is like-for-like; on part of it, the held-out "
                 "sets are only part of the active model's. Always on when starting from the active model and "
                 "every image here is in its split, so its test lesions stay unseen")
        submitted = st.form_submit_button("Launch", disabled=not (admin and dataset_ok))
    if submitted:
        config = {"data": folders[0] if len(folders) == 1 else folders, "epochs": int(epochs),
                  "img_size": int(img_size), "alpha": alpha, "batch_size": int(batch), "lr": lr, "seed": int(seed),
                  "balance": balance, "augment": augment, "photometric": photometric, "mix": mix,
                  "colour_constancy": colour_constancy, "compression": compression, "patients": with_patients,
                  "skip_other_labels": leave_out}
        try:   # the split and the starting weights come from one reading of the active model
            config, notes = launch.plan_run(config, dataset.table, start_from=start_from,
                                            same_lesions=same_lesions, active=registry.active_path())
        except launch.LaunchError as exc:
            st.error(str(exc))
            return
        try:
            run_id = jobs.start(config)
        except jobs.JobError as exc:
            st.error(str(exc))
        else:
            st.session_state["followed"] = run_id
            flash(*notes)
            st.rerun()


def figures_table(name: str, ours: dict, active: str, theirs: dict) -> pd.DataFrame:
    return pd.DataFrame([{"metric": label, name: ours.get(key), f"active ({active})": theirs.get(key),
                          "difference": (ours[key] - theirs[key]) if key in ours and key in theirs else None}
                         for key, label in METRIC_LABELS.items()]).set_index("metric")


def show_figures(table: pd.DataFrame) -> None:
    numbers = [c for c in table.columns if c != "difference"]
    st.dataframe(table.style.format("{:+.3f}", subset=["difference"], na_rep="–")
                 .format("{:.3f}", subset=numbers, na_rep="–"))


def compare_with_active(name: str) -> None:
    """The run against the active model on validation, where models are chosen; the test figures only
    beside, folded: choosing among runs on the test split would make its figures optimistic."""
    active = registry.active_name()
    try:
        ours_path, theirs_path = registry.bundle_path(name), registry.bundle_path(active)
        ours, theirs = read_manifest(ours_path), read_manifest(theirs_path)
    except BundleError as exc:
        st.error(str(exc))
        return
    same = shares_split(ours_path, theirs_path)
    st.markdown("**Validation split** (choose on these)")
    show_figures(figures_table(name, ours.get("validation") or {}, active, theirs.get("validation") or {}))
    if same:
        st.caption("Both models were validated and tested on the same held-out lesions: a like-for-like comparison. "
                   "Differences of a few hundredths are within the noise of one split; "
                   "`python scripts/compare_on_validation.py` gives a paired bootstrap over lesions.")
    else:
        st.caption("The models hold out different lesions, so these figures are only a rough comparison; a run "
                   "that holds out the active model's lesions (the form's option) can be compared like for like.")
    with st.expander("Test split (for reporting the chosen model, not for choosing)"):
        show_figures(figures_table(name, ours.get("test") or {}, active, theirs.get("test") or {}))
        st.caption("Choosing among runs on these makes the chosen one look better than it is: the test split "
                   "is read once a model has been chosen on validation.")


def runs_section(admin: bool) -> None:
    st.subheader("Runs")
    active = registry.active_name()
    left, right = st.columns([3, 1])
    left.markdown(f"Active model: **{active}**")
    if right.button("Roll back to the previous model", disabled=not admin):
        try:
            restored = registry.rollback()
        except BundleError as exc:
            st.error(str(exc))
        else:      # everything on the page (and the sidebar) must show the model now active
            flash(f"Rolled back: {restored} is active again.")
            st.cache_resource.clear()
            st.rerun()
    runs = jobs.list_runs()
    if not runs:
        st.info("No runs yet.")
        return
    run_id = st.selectbox("Run", runs)
    try:
        state = jobs.state(run_id)
    except jobs.JobError as exc:           # its record is damaged: say so, and let it be deleted
        st.error(str(exc))
        if st.button("Delete this run", disabled=not admin or run_id == active, key=f"del-{run_id}"):
            attempt(lambda: jobs.delete(run_id), jobs.JobError)
        return
    st.markdown(f"Status: **{state.status}**" + (f" — {state.error}" if state.error else ""))
    if state.status == "running":
        return
    show_curves(state)
    if state.status == "done":
        compare_with_active(run_id)
        promote, delete = st.columns(2)
        if promote.button("Promote to active model", disabled=not admin or run_id == active, key=f"pr-{run_id}"):
            with st.spinner("Checking the model before it is served..."):
                attempt(lambda: registry.promote(run_id), BundleError, clear_cache=True)
    else:
        resume, delete = st.columns(2)
        saved = jobs.saved_progress(run_id)
        label = None if not saved else "Finish this run (its training epochs are done)" if saved["finished"] \
            else f"Continue from epoch {saved['epoch'] + 1}"
        if label and resume.button(label, disabled=not admin, key=f"re-{run_id}",
                                   help="The run saved its state after every finished epoch; it goes on from there."):
            attempt(lambda: jobs.resume(run_id), jobs.JobError)
        with st.expander("Log"):
            st.code(jobs.log_tail(run_id, 40), language=None)
    if delete.button("Delete this run", disabled=not admin or run_id == active, key=f"del-{run_id}"):
        attempt(lambda: jobs.delete(run_id), jobs.JobError)


def flash(*messages: str) -> None:
    """Messages to show once at the top of the page after the rerun an action ends with."""
    st.session_state.setdefault("flash", []).extend(messages)


def attempt(action, errors, clear_cache: bool = False) -> None:
    """Run a button's action: a refusal is shown as a message, a success reruns the page."""
    try:
        action()
    except errors as exc:
        st.error(str(exc))
    else:
        if clear_cache:          # the served model changed
            st.cache_resource.clear()
        st.rerun()


st.title("🛠️ Retrain")
notice()
st.write("Train a new model in the background (a separate process: closing this page does not stop it), "
         "compare it with the active model, and promote it when it is better.")
admin = is_admin()
for message in st.session_state.pop("flash", []):
    st.info(message)
if not admin:
    st.info("Launching, cancelling, promoting and deleting need the admin password this server was given "
            "(SKIN_ADMIN_PASSWORD): type it in the box above. A local run without that setting needs none.")
running = jobs.running_job()
if running:
    st.subheader("Running now")
    st.caption("One run at a time on this server: the launch form returns when this one ends or is cancelled.")
    follow(running, admin)
else:
    launch_form(admin)
st.divider()
runs_section(admin)
