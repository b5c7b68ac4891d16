"""The app shell and pages under Streamlit's AppTest, serving a tiny bundle trained in the tests."""
import ast
import json
import shutil
import time

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, SAMPLE, make_folder_dataset
from skin_core.bundle import dataset_report_file

TIMEOUT = 120


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages" / f"{name}.py"), default_timeout=TIMEOUT)


def page_constant(name: str, constant: str):
    """A constant of a page's script, read without running the page."""
    tree = ast.parse((ROOT / "app_pages" / f"{name}.py").read_text())
    return next(ast.literal_eval(node.value) for node in tree.body
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == constant)


def real_image() -> bytes:
    return next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg")).read_bytes()


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def magic_writes(script) -> list[str]:
    """The statements of a page script that Streamlit's "magic" would write on the page: any bare expression
    other than a call or a docstring (a string under a constant, meant as its note, shows up as page text)."""
    tree = ast.parse(script.read_text())
    documented = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    docstrings = {id(node.body[0]) for node in ast.walk(tree)
                  if isinstance(node, documented) and ast.get_docstring(node)}
    return [f"{script.name}:{node.lineno} {ast.unparse(node)[:60]}" for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and not isinstance(node.value, (ast.Call, ast.Await))
            and id(node) not in docstrings]


@pytest.mark.parametrize("script", sorted((ROOT / "app_pages").glob("*.py")) + [ROOT / "streamlit_app.py"],
                         ids=lambda p: p.name)
def test_pages_write_nothing_by_accident(script):
    assert magic_writes(script) == []


def test_shell_shows_navigation_sidebar_and_notice(models_dir):
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    sidebar = " ".join(str(e.value) for e in at.sidebar.markdown) + " ".join(str(e.value) for e in at.sidebar.caption)
    test = json.loads((models_dir / "default" / "manifest.json").read_text())["test"]
    assert "Held-out test" in sidebar and f"always-{test['majority_class']} baseline" in sidebar
    assert "not a medical device" in texts(at)


def test_diagnose_a_real_image_gives_chart_top3_and_overlay(models_dir):
    at = page("diagnose").run()
    assert not at.exception
    at.file_uploader[0].set_value(("lesion.jpg", real_image(), "image/jpeg")).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    assert any(str(m.value).startswith("**Top 3:**") for m in at.markdown)
    shown = [image.caption for element in at.get("image") for image in element.proto.imgs]
    assert any(caption.startswith("Grad-CAM for") for caption in shown)          # the overlay beside the photo
    assert "Centre square (the model sees 32 px of its detail)" in shown          # the tiny model's input size
    assert at.selectbox[0].value in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert "not a medical device" in texts(at)
    # a map for a class other than the top one says it is not evidence for that class
    assert not any("not that it is likely" in str(c.value) for c in at.caption)
    other = next(c for c in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc") if c != at.selectbox[0].value)
    at.selectbox[0].set_value(other).run()
    assert not at.exception
    assert any("not that it is likely" in str(c.value) for c in at.caption)


def test_diagnose_runs_the_model_once_per_photo_however_the_heat_map_is_changed(models_dir, monkeypatch):
    from skin_core.predict import Predictor
    runs = []
    original = Predictor.analyse
    monkeypatch.setattr(Predictor, "analyse", lambda self, *a, **k: runs.append(1) or original(self, *a, **k))
    at = page("diagnose").run()
    at.file_uploader[0].set_value(("lesion.jpg", real_image(), "image/jpeg")).run()
    assert not at.exception and len(runs) == 1
    at.slider[0].set_value(0.8).run()
    other = next(c for c in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc") if c != at.selectbox[0].value)
    at.selectbox[0].set_value(other).run()
    assert not at.exception and len(runs) == 1
    assert any("Grad-CAM for" in image.caption for element in at.get("image") for image in element.proto.imgs)
    at.file_uploader[0].set_value([("lesion.jpg", real_image(), "image/jpeg"),
                                   ("second.png", encode_png(real_image()), "image/png")]).run()
    assert not at.exception and len(runs) == 2           # only the new photo is analysed
    # more photos than the session keeps beyond the page: each is still analysed once, on every later rerun too
    many = [(path.name, path.read_bytes(), "image/jpeg")
            for path in sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[:page_constant("diagnose", "ANALYSES_KEPT") + 2]]
    expected = len(runs) + sum(data != real_image() for _, data, _ in many)   # the first photo's answer is kept
    at.file_uploader[0].set_value(many).run()
    assert not at.exception and len(runs) == expected
    at.run()
    at.checkbox(key="one-lesion").check().run()                     # the combined answer reads the same analyses
    assert not at.exception and len(runs) == expected


def encode_png(jpeg: bytes) -> bytes:
    import io
    from PIL import Image
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_diagnose_refuses_a_bad_file_without_a_traceback(models_dir):
    at = page("diagnose").run()
    at.file_uploader[0].set_value(("notes.jpg", b"this is not a picture", "image/jpeg")).run()
    assert not at.exception
    assert any("Cannot use this file" in str(e.value) for e in at.error)
    assert len(at.get("plotly_chart")) == 0


def test_diagnose_warns_about_an_out_of_focus_photo_and_not_about_the_sharp_one(models_dir):
    import io
    from PIL import Image, ImageFilter
    photo = Image.open(io.BytesIO(real_image())).convert("RGB")
    blurred = io.BytesIO()
    photo.filter(ImageFilter.GaussianBlur(2)).save(blurred, "JPEG", quality=95)
    at = page("diagnose").run()
    at.file_uploader[0].set_value([("sharp.jpg", real_image(), "image/jpeg"),
                                   ("blurred.jpg", blurred.getvalue(), "image/jpeg")]).run()
    assert not at.exception
    photo_warnings = [str(w.value) for w in at.warning if "unlike the dermoscopy" in str(w.value)]
    assert len(photo_warnings) == 1 and "out of focus" in photo_warnings[0]
    assert len(at.get("plotly_chart")) == 2       # the blurred photo is still analysed, with the warning


def test_diagnose_answers_photos_of_one_lesion_together_only_when_told(models_dir):
    from skin_core import images, lesion
    from skin_core.bundle import load_bundle
    from skin_core.classes import full_name
    from skin_core.predict import Predictor
    first, second = sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[:2]
    at = page("diagnose").run()
    assert not at.checkbox                                   # nothing to combine yet
    at.file_uploader[0].set_value([("first.jpg", first.read_bytes(), "image/jpeg"),
                                   ("second.jpg", second.read_bytes(), "image/jpeg")]).run()
    assert not at.exception and len(at.get("plotly_chart")) == 2
    assert "answered together" not in " ".join(h.value for h in at.subheader)
    at.checkbox(key="one-lesion").check().run()
    assert not at.exception and len(at.get("plotly_chart")) == 3
    assert at.subheader[0].value == "One lesion: 2 photos answered together"
    predictor = Predictor(load_bundle(models_dir / "default"))
    answer = lesion.combine(predictor, [(p.name, predictor.analyse(images.decode(p.read_bytes())))
                                        for p in (first, second)])
    top, p = answer.ranked()[0]
    most_likely = [m.value for m in at.markdown if m.value.startswith("**Most likely")]
    assert len(most_likely) == 3 and most_likely[0].startswith(f"**Most likely: {full_name(top)}** ({p:.0%})")
    # a file that is not a photo leaves one: no combined answer, and the file's own section says why
    at.file_uploader[0].set_value([("first.jpg", first.read_bytes(), "image/jpeg"),
                                   ("notes.jpg", b"not a photo", "image/jpeg")]).run()
    assert not at.exception and "Fewer than two of these files" in texts(at)
    assert any("Cannot use this file" in str(e.value) for e in at.error)


def test_diagnose_example_gallery_gives_a_result_in_one_click_and_clears(models_dir):
    at = page("diagnose").run()
    at.button[0].click().run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    next(b for b in at.button if b.label.startswith("Clear example")).click().run()
    assert not at.exception and len(at.get("plotly_chart")) == 0


def test_diagnose_marks_an_untrained_tiny_model_uncertain(models_dir):
    # two epochs on 70 images cannot be confident about anything: the page must say so
    at = page("diagnose").run()
    at.file_uploader[0].set_value(("lesion.jpg", real_image(), "image/jpeg")).run()
    assert any("Uncertain" in str(w.value) for w in at.warning)


def test_evaluation_page_shows_the_numbers_in_the_json(models_dir):
    report = json.loads((models_dir / "default" / "evaluation.json").read_text())
    at = page("evaluation").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Balanced accuracy"] == f"{report['balanced_accuracy']:.3f}"
    assert metrics["Macro F1"] == f"{report['macro_f1']:.3f}"
    assert metrics["Majority baseline"] == f"{report['majority_baseline_accuracy']:.3f}"
    assert len(at.get("plotly_chart")) >= 5
    assert any("No robustness report" in str(i.value) for i in at.info)
    # each class's own calibration beside the top-label one, melanoma first
    assert next(s for s in at.selectbox if s.label == "Class").value == "mel"
    assert any("Ten bins of equal size. Mean probability given to Melanoma" in str(c.value) for c in at.caption)


def test_evaluation_page_shows_the_robustness_report(models_dir, sample_meta):
    from skin_core import images, robustness
    from skin_core.predict import Predictor
    predictor = Predictor.from_path(models_dir / "default")
    pictures = [images.load_file(path).rgb for path in sample_meta["path"][:12]]
    y_true = sample_meta["dx"][:12].map({c: i for i, c in enumerate(predictor.classes)}).to_numpy()
    rows = robustness.report(predictor, pictures, y_true, robustness.CONDITIONS[:3])
    (models_dir / "default" / robustness.ROBUSTNESS_FILE).write_text(json.dumps({"subset": "test", "conditions": rows}))
    at = page("evaluation").run()
    assert not at.exception
    shown = at.dataframe[-1].value
    assert list(shown.index) == [row["condition"] for row in rows]
    assert list(shown["balanced_accuracy"]) == [row["balanced_accuracy"] for row in rows]


def test_evaluation_page_names_damaged_reports_instead_of_failing(models_dir):
    from skin_core import robustness
    (models_dir / "default" / robustness.ROBUSTNESS_FILE).write_text("{not json")
    at = page("evaluation").run()
    assert not at.exception
    assert any("robustness report of this model cannot be read" in str(w.value) for w in at.warning)
    (models_dir / "default" / robustness.ROBUSTNESS_FILE).write_text("[1, 2]")        # JSON, but not a report
    at = page("evaluation").run()
    assert not at.exception
    assert any("robustness report of this model cannot be read" in str(w.value) for w in at.warning)
    for damaged in ("{not json", "[1, 2]"):
        (models_dir / "default" / "evaluation.json").write_text(damaged)
        at = page("evaluation").run()
        assert not at.exception
        assert any("evaluation report or training history cannot be read" in str(e.value) for e in at.error)


def test_evaluation_page_shows_the_served_model_first_when_it_is_a_promoted_run(models_dir):
    from skin_core import registry
    run_id = "run-20261129-120000-abcd"
    shutil.copytree(models_dir / "default", models_dir / "runs" / run_id / "bundle")
    at = page("evaluation").run()
    assert not at.exception and next(s for s in at.selectbox if s.label == "Model").value == "default"
    registry.promote(run_id, models_dir)
    at = page("evaluation").run()
    assert not at.exception and next(s for s in at.selectbox if s.label == "Model").value == run_id
    at.toggle[0].set_value(True).run()
    assert [s.value for s in at.selectbox if s.label in ("Model A", "Model B")] == [run_id, "default"]


def test_evaluation_page_without_history_and_comparing_two(models_dir):
    shutil.copytree(models_dir / "default", models_dir / "second")
    manifest = json.loads((models_dir / "second" / "manifest.json").read_text())
    del manifest["files"]["history.csv"]
    manifest["training"]["weights_averaged_with"] = ["sibling"]        # as scripts/refinish.py --average-with writes
    (models_dir / "second" / "manifest.json").write_text(json.dumps(manifest))
    (models_dir / "second" / "history.csv").unlink()
    at = page("evaluation").run()
    at.toggle[0].set_value(True).run()
    assert not at.exception
    assert [s.label for s in at.selectbox if s.label.startswith("Model")] == ["Model A", "Model B"]
    soup_note = "averaged with those of sibling (a weight soup), so it has no training curves"
    assert any(soup_note in str(i.value) for i in at.info)
    assert any("tested on the same held-out lesions" in str(c.value) for c in at.caption)
    manifest["training"]["ensemble_of"] = ["r50", "r45"]                # as scripts/ensemble.py writes
    (models_dir / "second" / "manifest.json").write_text(json.dumps(manifest))
    at.run()
    assert any("joins the networks r50 and r45, trained separately" in str(i.value) for i in at.info)
    split = models_dir / "second" / "split.csv"
    split.write_text(split.read_text().replace(",test", ",train", 1))
    at.run()
    assert any("tested on different lesions" in str(w.value) for w in at.warning)


def launch_button(at: AppTest):
    return next(b for b in at.button if b.label == "Launch")


def test_retrain_page_renders_the_form_with_the_sample_dataset(models_dir, monkeypatch):
    monkeypatch.delenv("SKIN_ADMIN_PASSWORD", raising=False)
    at = page("retrain").run()
    assert not at.exception
    assert any("70 images" in str(c.value) for c in at.caption)
    assert not launch_button(at).disabled
    assert "No runs yet." in [i.value for i in at.info]


def test_retrain_form_sends_the_chosen_settings_to_the_job(models_dir, monkeypatch):
    from skin_core import jobs, registry
    monkeypatch.delenv("SKIN_ADMIN_PASSWORD", raising=False)
    launched = []

    def refuse(config):          # record what the form asked for, launch nothing
        launched.append(config)
        raise jobs.JobError("not launching in this test")

    monkeypatch.setattr(jobs, "start", refuse)
    at = page("retrain").run()
    next(s for s in at.selectbox if s.label == "Label mixing").select("mixup")      # form widgets send on submit
    next(s for s in at.selectbox if s.label == "Class balancing").select("sampling")
    next(c for c in at.checkbox if c.label.startswith("Camera differences")).check()
    next(c for c in at.checkbox if c.label.startswith("Even out white balance")).check()
    next(c for c in at.checkbox if c.label.startswith("JPEG re-saving")).check()
    next(c for c in at.checkbox if c.label.startswith("Hold out the active model's")).check()
    launch_button(at).click().run()
    assert not at.exception
    assert launched and launched[0]["mix"] == "mixup" and launched[0]["balance"] == "sampling"
    assert launched[0]["photometric"] is True and launched[0]["colour_constancy"] is True
    assert launched[0]["compression"] is True and launched[0]["patience_from"] == 2   # half of the 5 epochs
    assert launched[0]["split_from"] == str(registry.active_path())
    assert launched[0]["data"].endswith("sample_data")
    assert any("not launching in this test" in str(e.value) for e in at.error)
    # every key the form sends is a training setting with an acceptable value, in TrainConfig's own words
    from skin_core.run_config import TrainConfig, help_of
    assert TrainConfig.from_settings({**launched[0], "out": "unused"}).augment is True
    assert next(c for c in at.checkbox if c.label.startswith("Camera differences")).help == help_of("photometric")


def dataset_folders(at, *folders) -> None:
    """The Retrain form's dataset: folders on the server, one per line."""
    at.radio[0].set_value("Folders on the server").run()
    next(t for t in at.text_area if t.label == "Dataset folders, one per line").input(
        "\n".join(map(str, folders))).run()


def test_retrain_form_refuses_to_reuse_a_split_that_misses_images_of_the_dataset(models_dir, monkeypatch, tmp_path,
                                                                                  sample_meta):
    from conftest import make_ham_dataset
    from skin_core import jobs
    monkeypatch.delenv("SKIN_ADMIN_PASSWORD", raising=False)
    launched = []
    monkeypatch.setattr(jobs, "start", launched.append)
    extra = sample_meta.head(1).assign(image_id="ISIC_9999999", lesion_id="HAM_9999999")
    folder = make_ham_dataset(tmp_path / "bigger", pd.concat([sample_meta, extra], ignore_index=True))
    at = page("retrain").run()
    dataset_folders(at, folder)
    next(c for c in at.checkbox if c.label.startswith("Hold out the active model's")).check()
    launch_button(at).click().run()
    assert not at.exception and not launched
    assert any("does not cover this dataset: 1 images are not in" in str(e.value) and "ISIC_9999999" in str(e.value)
               for e in at.error)


def test_a_run_from_the_active_model_never_tests_on_lesions_it_was_tuned_on(models_dir, monkeypatch, tmp_path,
                                                                            sample_meta):
    from conftest import make_ham_dataset
    from skin_core import jobs, registry
    monkeypatch.delenv("SKIN_ADMIN_PASSWORD", raising=False)
    launched = []
    monkeypatch.setattr(jobs, "start", lambda config: launched.append(config) or "run-x")
    at = page("retrain").run()
    next(s for s in at.selectbox if s.label == "Start from").select("active")
    launch_button(at).click().run()   # the sample holds the active model's split: it is reused
    assert launched[0]["init_bundle"] == launched[0]["split_from"] == str(registry.active_path())
    assert launched[0]["img_size"] == 32 and any("Input size 32 px" in str(i.value) for i in at.info)
    extra = sample_meta.head(1).assign(image_id="ISIC_9999999", lesion_id="HAM_9999999")
    folder = make_ham_dataset(tmp_path / "bigger", pd.concat([sample_meta, extra], ignore_index=True))
    at = page("retrain").run()
    dataset_folders(at, folder)
    next(s for s in at.selectbox if s.label == "Start from").select("active")
    launch_button(at).click().run()   # a fresh split of this dataset would test on the active model's images
    assert not at.exception and len(launched) == 1
    assert any("trained or tuned on" in str(e.value) for e in at.error)


def test_the_retrain_form_trains_on_several_folders_as_one_each_keeping_its_source(models_dir, monkeypatch, tmp_path,
                                                                                     sample_meta):
    from conftest import make_ham_dataset
    from skin_core import jobs
    monkeypatch.delenv("SKIN_ADMIN_PASSWORD", raising=False)
    launched = []
    monkeypatch.setattr(jobs, "start", lambda config: launched.append(config) or "run-two")
    first = make_ham_dataset(tmp_path / "clinic_a", sample_meta.iloc[::2])
    second = make_ham_dataset(tmp_path / "clinic_b", sample_meta.iloc[1::2])
    at = page("retrain").run()
    dataset_folders(at, first, "", second)                 # a blank line between them is not a folder
    assert not at.error
    assert any("70 images" in str(c.value) and "from 2 sources (clinic_a 35, clinic_b 35)" in str(c.value)
               for c in at.caption)
    launch_button(at).click().run()
    assert not at.exception and launched[0]["data"] == [str(first), str(second)]
    namesake = make_ham_dataset(tmp_path / "elsewhere" / "clinic_a", sample_meta.iloc[1::2])
    dataset_folders(at, first, namesake)                                  # two sources known by one name
    assert any("same name" in str(e.value) for e in at.error) and launch_button(at).disabled


def test_an_active_ensemble_is_continued_one_network_at_a_time_from_the_form(models_dir, monkeypatch):
    """With the default pair active, the form offers each of its networks as a start (train.py --init-member)."""
    import json
    from skin_core import jobs, registry
    monkeypatch.delenv("SKIN_ADMIN_PASSWORD", raising=False)
    manifest = json.loads((models_dir / "default" / "manifest.json").read_text())
    manifest["training"]["ensemble_of"] = ["r50", "r45"]          # as the served pair records its networks
    (models_dir / "default" / "manifest.json").write_text(json.dumps(manifest))
    launched = []
    monkeypatch.setattr(jobs, "start", lambda config: launched.append(config) or "run-x")
    at = page("retrain").run()
    start = next(s for s in at.selectbox if s.label == "Start from")
    assert start.options == ["ImageNet weights", "Network 1 of the active model (r50)",
                             "Network 2 of the active model (r45)", "No weights (random)"]
    start.select("member-1")
    launch_button(at).click().run()
    assert not at.exception and launched[0]["init_member"] == 1
    assert launched[0]["init_bundle"] == str(registry.active_path())
    assert any("continues network 1 of the active model (r50)" in str(i.value) for i in at.info)


def test_the_retrain_form_leaves_out_labels_beyond_the_seven_only_when_asked(models_dir, monkeypatch, tmp_path,
                                                                             sample_meta):
    from skin_core import jobs
    launched = []
    monkeypatch.setattr(jobs, "start", lambda config: launched.append(config) or "run-test")
    folder = make_folder_dataset(tmp_path / "clinic", sample_meta)
    (folder / "scc").mkdir()
    shutil.copy(sample_meta["path"].iloc[0], folder / "scc" / "scc_1.jpg")
    at = page("retrain").run()
    dataset_folders(at, folder)
    assert any("Unknown class folders scc" in str(e.value) for e in at.error) and launch_button(at).disabled
    next(c for c in at.checkbox if c.label.startswith("Leave out images labelled beyond")).check().run()
    assert not at.error and any("70 images" in str(c.value) and "1 left out as asked" in str(c.value)
                                for c in at.caption)
    launch_button(at).click().run()
    assert not at.exception and launched and launched[0]["skip_other_labels"] is True


def test_retrain_actions_need_the_password_when_one_is_set(models_dir, monkeypatch):
    monkeypatch.setenv("SKIN_ADMIN_PASSWORD", "hunter2")
    at = page("retrain").run()
    assert not at.exception
    assert launch_button(at).disabled
    at.text_input(key="admin_password").input("wrong").run()
    assert any("Wrong password" in str(e.value) for e in at.error)
    assert launch_button(at).disabled
    at.text_input(key="admin_password").input("hunter2").run()
    assert not launch_button(at).disabled


def finished_evaluation(models_dir, timeout_s: float = 300):
    """The evaluation the page launched, once its process has ended."""
    from skin_core import evaluation_jobs
    deadline = time.time() + timeout_s
    while (job := evaluation_jobs.latest(models_dir / "default")).status == "running":
        assert time.time() < deadline, "the evaluation did not end"
        time.sleep(0.5)
    return job


def test_evaluation_page_evaluates_another_dataset_and_saves_it(models_dir):
    at = page("evaluation").run()
    at.text_input(key="ds-main").input(str(SAMPLE)).run()
    at.button(key="go-main").click().run()
    assert not at.exception and not at.error
    assert any(str(p.text).startswith(f"Evaluating {SAMPLE}: ") for p in at.get("progress"))   # in its own process
    name = dataset_report_file(str(SAMPLE))
    assert finished_evaluation(models_dir).status == "done"
    at.run()
    assert not at.exception
    assert any(f"Saved as {name}" in str(s.value) for s in at.success)
    saved = json.loads((models_dir / "default" / name).read_text())
    # the tiny model was trained on the sample data: only its test split is scored, and the page says so
    split = pd.read_csv(models_dir / "default" / "split.csv")
    assert saved["n"] == (split["subset"] == "test").sum() and saved["left_out_seen"] == 70 - saved["n"]
    assert any(f"{saved['left_out_seen']} images whose image or lesion the model trained or was tuned on were left out"
               in str(c.value) for c in at.caption)
    at = page("evaluation").run()        # later: the saved report is listed beside the bundle's own
    assert any(e.label == "Saved evaluations on other datasets (1)" for e in at.expander)
    assert not at.warning
    (models_dir / "default" / "evaluation-cut-0123abcd.json").write_text('{"n": 3')
    at.run()
    assert any("evaluation-cut-0123abcd.json beside this bundle cannot be read" in str(w.value) for w in at.warning)
    at.text_input(key="ds-main").input(str(models_dir)).run()
    at.button(key="go-main").click().run()
    assert any("No labels found" in str(e.value) for e in at.error)


def test_the_evaluation_page_says_which_test_photos_copy_a_photo_the_model_learnt_from(models_dir):
    at = page("evaluation").run()
    assert not any("copies of photos the model learnt from" in str(c.value) for c in at.caption)
    manifest_path = models_dir / "default" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["seen_photos"]["test_copies"] = [{"image_id": "ISIC_0025226", "copy_of": "ISIC_0030074"},
                                              {"image_id": "ISIC_0000173", "copy_of": "ISIC_0015110"}]
    manifest_path.write_text(json.dumps(manifest))
    at = page("evaluation").run()
    assert not at.exception
    assert any(str(c.value).startswith("2 of these test photos are copies of photos the model learnt from") and
               "ISIC_0025226, ISIC_0000173" in str(c.value) for c in at.caption)


def test_the_evaluation_page_leaves_out_other_labels_only_when_asked(models_dir, sample_meta, tmp_path):
    split = pd.read_csv(models_dir / "default" / "split.csv", dtype=str)
    unseen = sample_meta[sample_meta["image_id"].isin(split.loc[split["subset"] == "test", "image_id"])]
    clinic = make_folder_dataset(tmp_path / "clinic", unseen)
    (clinic / "scc").mkdir()
    shutil.copy(unseen["path"].iloc[0], clinic / "scc" / "scc_1.jpg")
    at = page("evaluation").run()
    at.text_input(key="ds-main").input(str(clinic)).run()
    at.button(key="go-main").click().run()
    assert any("Unknown class folders scc" in str(e.value) for e in at.error) and not at.success
    at.checkbox(key="skip-main").check().run()
    at.button(key="go-main").click().run()
    assert finished_evaluation(models_dir).status == "done"
    at.run()
    assert not at.exception and at.success
    assert any("Left out as asked: 1 image labelled 'scc'." in str(c.value) for c in at.caption)


def test_an_evaluation_that_fails_in_its_process_is_reported_on_the_page(models_dir, sample_meta, tmp_path):
    split = pd.read_csv(models_dir / "default" / "split.csv", dtype=str)
    learnt = sample_meta[sample_meta["image_id"].isin(split.loc[split["subset"] == "train", "image_id"])]
    folder = make_folder_dataset(tmp_path / "learnt", learnt)   # labels read fine: the launch is allowed
    at = page("evaluation").run()
    at.text_input(key="ds-main").input(str(folder)).run()
    at.button(key="go-main").click().run()
    assert not at.error
    assert finished_evaluation(models_dir).status == "failed"
    at.run()
    assert not at.exception
    assert any(f"The evaluation of {folder}" in str(e.value) and f"failed: All {len(learnt)} images" in str(e.value)
               for e in at.error)
    assert not list((models_dir / "default").glob("evaluation-*.json"))


def test_saving_an_evaluation_beside_a_bundle_needs_the_admin_password(models_dir, monkeypatch):
    monkeypatch.setenv("SKIN_ADMIN_PASSWORD", "hunter2")
    at = page("evaluation").run()
    at.text_input(key="ds-main").input(str(SAMPLE)).run()
    assert at.button(key="go-main").disabled
    at.text_input(key="admin-main").input("wrong").run()
    assert any("Wrong password" in str(e.value) for e in at.error) and at.button(key="go-main").disabled
    at.text_input(key="admin-main").input("hunter2").run()
    assert not at.button(key="go-main").disabled


def test_about_shows_the_active_models_own_card_and_never_anothers_as_its_own(models_dir):
    from skin_core import registry
    (models_dir / "default" / "MODEL_CARD.md").write_text("# Model card: the default\n")
    at = page("about").run()
    assert not at.exception and "# Model card: the default" in [m.value for m in at.markdown]
    shutil.copytree(models_dir / "default", models_dir / "candidate", ignore=shutil.ignore_patterns("MODEL_CARD.md"))
    registry.promote("candidate", models_dir)
    at = page("about").run()
    assert not at.exception
    assert any("has no model card" in str(i.value) for i in at.info)
    assert at.expander[0].label == "Model card of the committed default model"


def test_retrain_runs_section_compares_a_finished_run_promotes_it_and_rolls_back(models_dir):
    """A finished run as the job files leave it (models/runs/<id>/ with job.json, progress.jsonl, bundle/)."""
    import time
    from skin_core import registry
    run_id = "run-20261129-120000-abcd"
    run_dir = models_dir / "runs" / run_id
    shutil.copytree(models_dir / "default", run_dir / "bundle")
    run_manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    run_manifest["validation"]["balanced_accuracy"] += 0.05            # the run did a little better
    (run_dir / "bundle" / "manifest.json").write_text(json.dumps(run_manifest))
    (run_dir / "job.json").write_text(json.dumps({"config": {"epochs": 1}, "pid": None, "started": time.time()}))
    events = [{"event": "epoch", "epoch": 1, "metrics": {"loss": 1.2, "val_loss": 1.4, "accuracy": 0.5,
                                                          "val_accuracy": 0.45}},
              {"event": "done", "message": "bundle written"}]
    (run_dir / "progress.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    at = page("retrain").run()
    assert not at.exception
    assert any("Status: **done**" in str(m.value) for m in at.markdown)
    # chosen on validation; the test figures only folded beside them
    manifest = json.loads((models_dir / "default" / "manifest.json").read_text())
    validation, test = (frame.value for frame in at.dataframe[-2:])
    assert validation.loc["Balanced accuracy", run_id] == pytest.approx(run_manifest["validation"]["balanced_accuracy"])
    assert test.loc["Balanced accuracy", run_id] == pytest.approx(manifest["test"]["balanced_accuracy"])
    assert validation.loc["Balanced accuracy", "difference"] == pytest.approx(0.05)
    assert validation.loc["Macro F1", "difference"] == 0
    assert any("same held-out lesions" in str(c.value) for c in at.caption)
    assert any("not for choosing" in e.label for e in at.expander)
    next(b for b in at.button if b.label == "Promote to active model").click().run()
    assert not at.exception and registry.active_name() == run_id
    next(b for b in at.button if b.label == "Roll back to the previous model").click().run()
    assert not at.exception and registry.active_name() == "default"
    assert any("Rolled back: default is active again." in str(i.value) for i in at.info)
    assert any("Active model: **default**" in str(m.value) for m in at.markdown)     # the page shows it at once


def test_a_cancelled_run_with_saved_epochs_offers_to_continue(models_dir, monkeypatch):
    import time
    from skin_core import jobs
    monkeypatch.delenv("SKIN_ADMIN_PASSWORD", raising=False)
    continued = []
    monkeypatch.setattr(jobs, "resume", lambda run_id: continued.append(run_id))
    runs = (("run-20261129-110000-cccc", {"epoch": 6, "finished": True}),
            ("run-20261129-120000-aaaa", {"epoch": 3, "finished": False}), ("run-20261129-130000-bbbb", None))
    for run_id, saved in runs:
        run_dir = models_dir / "runs" / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "job.json").write_text(json.dumps({"config": {"epochs": 6}, "pid": None, "started": time.time()}))
        (run_dir / "progress.jsonl").write_text(json.dumps({"event": "cancelled", "message": "cancelled"}) + "\n")
        if saved:          # a checkpoint as resume.Checkpoint.save leaves it: the state names its saved epoch
            saved_epoch = run_dir / jobs.CHECKPOINT / f"epoch-{saved['epoch']:03d}"
            saved_epoch.mkdir(parents=True)
            (saved_epoch / "weights.npz").write_bytes(b"")
            (run_dir / jobs.CHECKPOINT / "state.json").write_text(json.dumps({**saved, "saved": saved_epoch.name}))
    at = page("retrain").run()
    assert not at.exception and not [b for b in at.button if b.label.startswith("Continue")]   # the newest: none saved
    next(s for s in at.selectbox if s.label == "Run").select("run-20261129-120000-aaaa").run()
    button = next(b for b in at.button if b.label.startswith("Continue"))
    assert button.label == "Continue from epoch 4"
    button.click().run()
    assert not at.exception and continued == ["run-20261129-120000-aaaa"]
    next(s for s in at.selectbox if s.label == "Run").select("run-20261129-110000-cccc").run()
    assert [b.label for b in at.button if b.label.startswith("Finish")] == [
        "Finish this run (its training epochs are done)"]


def test_a_run_with_a_damaged_record_is_named_and_can_be_deleted(models_dir, monkeypatch):
    monkeypatch.delenv("SKIN_ADMIN_PASSWORD", raising=False)
    run_dir = models_dir / "runs" / "run-20261129-120000-dddd"
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text('{"config": {"epo')          # cut short by a full disk
    at = page("retrain").run()
    assert not at.exception
    assert any("job.json is damaged" in str(e.value) for e in at.error)
    next(b for b in at.button if b.label == "Delete this run").click().run()
    assert not at.exception and not run_dir.exists()
