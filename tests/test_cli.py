"""`python -m skin_core predict|evaluate|export`: predicting photos as a user runs it, in a separate process
(its stderr must hold nothing but the tool's own lines, TensorFlow's start-up logs included); the other cases
through the same `main`, in-process."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, SAMPLE, make_folder_dataset
from skin_core import quality


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "skin_core", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def run_in_process(capsys, *args):
    """Exit code, stdout and stderr of `main` (the entry point without the process start-up)."""
    from skin_core.__main__ import main
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_prints_probabilities_and_writes_gradcam(tiny_bundle, tmp_path):
    photos = sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[:2]
    result = run("predict", "--model", tiny_bundle, *photos, "--gradcam", tmp_path / "cams")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2
    subsets = pd.read_csv(tiny_bundle / "split.csv", dtype=str).set_index("image_id")["subset"]
    for photo, record in zip(photos, records):
        assert set(record["probabilities"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
        assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert (tmp_path / "cams").joinpath(record["gradcam"].rsplit("/", 1)[-1]).is_file()
        # the findings the Diagnose page shows about the answer, from the same probabilities and thresholds
        classes, probabilities = list(record["probabilities"]), np.array(list(record["probabilities"].values()))
        expected = quality.prediction_findings(classes, probabilities, record["thresholds"])
        learnt = subsets[photo.stem] in ("train", "val")     # and, for a photo it learnt from, a note saying so
        assert [f["code"] for f in record["findings"] if f["about"] == "answer"] == \
            [f.code for f in expected] + (["seen"] if learnt else [])
        assert "uncertain" in [f.code for f in expected]    # two epochs on 70 images: never confident
        assert record["top"] == max(record["probabilities"], key=record["probabilities"].get)
        assert record["at_or_above_threshold"]["mel"] == (record["probabilities"]["mel"] >= record["thresholds"]["mel"])


def test_predict_reports_an_unreadable_file_in_one_line(tiny_bundle, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))
    result = run("predict", "--model", tiny_bundle, bad, good, tmp_path / "missing.png")
    assert result.returncode != 0
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert "broken.jpg" in errors[0] and "missing.png" in errors[1]
    assert "Traceback" not in result.stderr
    assert len(result.stdout.splitlines()) == 1      # the good image still gets its answer


def test_a_tiny_thumbnail_is_answered_with_the_small_photo_warning(tiny_bundle, tmp_path, capsys):
    """A valid 12x9 JPEG (a thumbnail) is enlarged and answered, flagged as having little detail."""
    from PIL import Image
    thumbnail = tmp_path / "thumb.jpg"
    with Image.open(next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))) as photo:
        photo.resize((12, 9)).save(thumbnail, "JPEG")
    code, out, err = run_in_process(capsys, "predict", "--model", tiny_bundle, thumbnail)
    assert code == 0, err
    record = json.loads(out)
    assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    small = [f for f in record["findings"] if f["code"] == "small"]
    assert len(small) == 1 and "12x9" in small[0]["message"]
    assert record["photo"] == {"format": "JPEG", "size": [12, 9], "notes": []}


def test_a_phone_size_photo_is_answered_with_its_size_in_the_file_recorded(tiny_bundle, tmp_path, capsys):
    """A 12-megapixel JPEG is decoded reduced (images.DECODED_SIDE); the record still says what the file held."""
    from PIL import Image
    phone = tmp_path / "phone.jpg"
    with Image.open(next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))) as photo:
        photo.resize((4032, 3024)).save(phone, "JPEG", quality=90)
    code, out, err = run_in_process(capsys, "predict", "--model", tiny_bundle, phone)
    assert code == 0, err
    record = json.loads(out)
    assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert record["photo"] == {"format": "JPEG", "size": [4032, 3024], "notes": []}
    assert "small" not in [f["code"] for f in record["findings"]]


def test_predict_answers_photos_of_one_lesion_together_when_told(tiny_bundle, tmp_path, capsys):
    photos = sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[:2]
    code, out, err = run_in_process(capsys, "predict", "--model", tiny_bundle, *photos, "--one-lesion")
    assert code == 0, err
    *each, combined = [json.loads(line) for line in out.splitlines()]
    assert [record["image"] for record in each] == [str(photo) for photo in photos]
    assert combined["images"] == [str(photo) for photo in photos] and "combined_as" in combined
    assert sum(combined["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert combined["top"] == max(combined["probabilities"], key=combined["probabilities"].get)
    # one photo is no lesion series; with a photo that cannot be read, what is left must still be two
    code, out, err = run_in_process(capsys, "predict", "--model", tiny_bundle, photos[0], "--one-lesion")
    assert code == 2 and "at least 2 photos" in err and not out
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    code, out, err = run_in_process(capsys, "predict", "--model", tiny_bundle, photos[0], broken, "--one-lesion")
    assert code == 2 and "only 1 of the photos could be read" in err and len(out.splitlines()) == 1


def test_predict_with_a_broken_bundle_fails_cleanly(tmp_path, capsys):
    code, _, err = run_in_process(capsys, "predict", "--model", tmp_path,
                                  next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg")))
    assert code == 2
    assert "manifest.json is missing" in err and "Traceback" not in err


def test_evaluate_writes_the_report_for_a_folder_dataset(tiny_bundle, tmp_path, sample_meta, capsys):
    data = make_folder_dataset(tmp_path / "folders", sample_meta)
    code, out, err = run_in_process(capsys, "evaluate", "--model", tiny_bundle, "--data", data,
                                    "--json", tmp_path / "report.json")
    assert code == 0, err
    assert "balanced accuracy" in out
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("n", "classes", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "top2_accuracy",
                "top3_accuracy", "per_class", "confusion_matrix", "ece", "majority_baseline_accuracy", "ci95"):
        assert key in report
    # the same images the tiny model was trained on: only its test split may be scored
    split = pd.read_csv(tiny_bundle / "split.csv", dtype=str)
    test = split[split["subset"] == "test"]
    assert report["n"] == len(test) and report["left_out_seen"] == 70 - len(test)
    assert sorted(report["predictions"]["image_id"]) == sorted(test["image_id"])
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == \
        [int((test["dx"] == c).sum()) for c in report["classes"]]
    assert set(report["per_class"]["mel"]) == {"precision", "recall", "f1", "support", "auc"}
    assert "images whose image or lesion the model trained or was tuned on were left out" in out
    assert "each image counts as a lesion of its own" in out      # class folders without a lesion table
    assert f"Scoring {len(test)} images with the model..." in err    # the slow steps are named as they start
    assert err.count("Scored ") <= 10 and f"Scored {len(test)}/{len(test)} images" in err


def test_evaluating_only_images_the_model_learned_from_is_refused(tiny_bundle, tmp_path, sample_meta, capsys):
    split = pd.read_csv(tiny_bundle / "split.csv", dtype=str)
    learned = sample_meta[sample_meta["image_id"].isin(split.loc[split["subset"] != "test", "image_id"])]
    data = make_folder_dataset(tmp_path / "folders", learned)
    code, out, err = run_in_process(capsys, "evaluate", "--model", tiny_bundle, "--data", data)
    assert code == 2 and "Traceback" not in err
    assert f"All {len(learned)} images of this dataset, or their lesions, were used to train or tune this model" in err


def test_evaluate_scores_a_dataset_of_two_classes_over_those_classes(tiny_bundle, tmp_path, sample_meta, capsys):
    split = pd.read_csv(tiny_bundle / "split.csv", dtype=str)
    unseen = sample_meta[sample_meta["image_id"].isin(split.loc[split["subset"] == "test", "image_id"])]
    data = make_folder_dataset(tmp_path / "folders", unseen[unseen["dx"].isin(["mel", "nv"])])
    code, out, err = run_in_process(capsys, "evaluate", "--model", tiny_bundle, "--data", data,
                                    "--json", tmp_path / "report.json")
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["classes_absent"] == ["akiec", "bcc", "bkl", "df", "vasc"]
    assert report["n"] == int(unseen["dx"].isin(["mel", "nv"]).sum())
    assert "no images of akiec, bcc, bkl, df, vasc" in out


def test_evaluate_leaves_out_other_labels_only_when_asked_and_says_so(tiny_bundle, tmp_path, sample_meta, capsys):
    split = pd.read_csv(tiny_bundle / "split.csv", dtype=str)
    unseen = sample_meta[sample_meta["image_id"].isin(split.loc[split["subset"] == "test", "image_id"])]
    data = make_folder_dataset(tmp_path / "folders", unseen)
    (data / "SCC").mkdir()                                   # a class of ISIC 2019 the model does not know
    shutil.copy(unseen["path"].iloc[0], data / "SCC" / "scc_1.jpg")
    shutil.copy(unseen["path"].iloc[1], data / "SCC" / "scc_2.jpg")
    code, _, err = run_in_process(capsys, "evaluate", "--model", tiny_bundle, "--data", data)
    assert code == 2 and "Unknown class folders SCC" in err
    code, out, err = run_in_process(capsys, "evaluate", "--model", tiny_bundle, "--data", data, "--skip-other-labels",
                                    "--json", tmp_path / "report.json")
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["n"] == len(unseen)
    assert sorted(report["skipped"]) == ["scc_1: labelled 'scc', not one of the model's classes",
                                         "scc_2: labelled 'scc', not one of the model's classes"]
    assert "Left out as asked: 2 images labelled 'scc'." in out


def test_evaluate_refuses_a_report_path_that_is_a_folder_or_in_a_bundle_before_evaluating(tiny_bundle, tmp_path,
                                                                                          capsys):
    code, _, err = run_in_process(capsys, "evaluate", "--model", tiny_bundle, "--data", tmp_path / "missing",
                                  "--json", tmp_path)
    assert code == 2 and "is a folder" in err and "Traceback" not in err
    report = (tiny_bundle / "evaluation.json").read_bytes()
    code, _, err = run_in_process(capsys, "evaluate", "--model", tiny_bundle, "--data", SAMPLE,
                                  "--json", tiny_bundle / "evaluation.json")
    assert code == 2 and "inside a model bundle" in err
    assert (tiny_bundle / "evaluation.json").read_bytes() == report


def test_evaluate_names_a_bad_dataset(tiny_bundle, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_in_process(capsys, "evaluate", "--model", tiny_bundle, "--data", tmp_path / "empty",
                                  "--json", tmp_path / "out.json")
    assert code == 2
    assert "is empty" in err and "Traceback" not in err
    assert not (tmp_path / "out.json").exists()   # no empty report left behind


def test_export_refuses_an_impossible_request_in_one_line(tiny_bundle, tmp_path, capsys):
    code, _, err = run_in_process(capsys, "export", "--model", tiny_bundle, "--format", "savedmodel",
                                  "--quantize", "int8", "--out", tmp_path / "saved")
    assert code == 2
    assert err.strip().splitlines() == ["error: Quantisation applies to TFLite only"]
    assert not (tmp_path / "saved").exists()


def test_an_output_path_that_cannot_be_written_is_one_line_before_any_work(tiny_bundle, tmp_path, capsys):
    blocker = tmp_path / "report"
    blocker.write_text("a file where a folder is needed")
    code, out, err = run_in_process(capsys, "evaluate", "--model", tiny_bundle, "--data", SAMPLE,
                                    "--json", blocker / "evaluation.json")
    assert code == 2
    assert err.strip().startswith("error: ") and str(blocker) in err and "Traceback" not in err
    assert "accuracy" not in out   # refused before evaluating


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "argument --epochs: must be at least 1, not 0"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, not 0"),
    (["--img-size", "16"], "argument --img-size: must be at least 32, not 16"),
    (["--test-fraction", "1"], "argument --test-fraction: must be between 0 and 1 (0, 1), not 1.0"),
    (["--fine-tune-fraction", "1.5"], "argument --fine-tune-fraction: must be between 0 and 1 [0, 1], not 1.5"),
    (["--dropout", "1"], "argument --dropout: must be between 0 and 1 [0, 1), not 1.0"),
    (["--alpha", "0.3"], "argument --alpha: invalid choice: 0.3"),
    (["--test-fraction", "0.6", "--val-fraction", "0.5"], "their sum must be below 1"),
])
def test_train_refuses_impossible_numbers_before_reading_anything(argv, message, tmp_path, capsys):
    # these failed as ZeroDivisionError or KeyError tracebacks, some after the whole dataset had been read
    import train
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--data", str(SAMPLE), "--out", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
