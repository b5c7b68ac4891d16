"""`python -m skin_core predict|evaluate|export` as a user runs them, in a separate process."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, SAMPLE, make_folder_dataset


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "skin_core", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_predict_prints_probabilities_and_writes_gradcam(tiny_bundle, tmp_path):
    photos = sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[:2]
    result = run("predict", "--model", tiny_bundle, *photos, "--gradcam", tmp_path / "cams")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2
    for record in records:
        assert set(record["probabilities"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
        assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert (tmp_path / "cams").joinpath(record["gradcam"].rsplit("/", 1)[-1]).is_file()


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


def test_predict_with_a_broken_bundle_fails_cleanly(tmp_path):
    result = run("predict", "--model", tmp_path, next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg")))
    assert result.returncode == 2
    assert "manifest.json is missing" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_writes_the_report_for_a_folder_dataset(tiny_bundle, tmp_path, sample_meta):
    data = make_folder_dataset(tmp_path / "folders", sample_meta)
    result = run("evaluate", "--model", tiny_bundle, "--data", data, "--json", tmp_path / "report.json")
    assert result.returncode == 0, result.stderr
    assert "balanced accuracy" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("n", "classes", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "top2_accuracy",
                "top3_accuracy", "per_class", "confusion_matrix", "ece", "majority_baseline_accuracy", "ci95"):
        assert key in report
    assert report["n"] == 70
    assert np.array(report["confusion_matrix"]).sum() == 70
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == [10] * 7
    assert set(report["per_class"]["mel"]) == {"precision", "recall", "f1", "support", "auc"}


def test_evaluate_names_a_bad_dataset(tiny_bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("evaluate", "--model", tiny_bundle, "--data", tmp_path / "empty", "--json", tmp_path / "out.json")
    assert result.returncode == 2
    assert "is empty" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.json").exists()   # no empty report left behind


def test_export_refuses_an_impossible_request_in_one_line(tiny_bundle, tmp_path):
    result = run("export", "--model", tiny_bundle, "--format", "savedmodel", "--quantize", "int8",
                 "--out", tmp_path / "saved")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: Quantisation applies to TFLite only"
    assert "Traceback" not in result.stderr and not (tmp_path / "saved").exists()


def test_an_output_path_that_cannot_be_written_is_one_line_before_any_work(tiny_bundle, tmp_path, capsys):
    from skin_core.__main__ import main
    blocker = tmp_path / "report"
    blocker.write_text("a file where a folder is needed")
    assert main(["evaluate", "--model", str(tiny_bundle), "--data", str(SAMPLE),
                 "--json", str(blocker / "evaluation.json")]) == 2
    err = capsys.readouterr()
    assert err.err.strip().startswith("error: ") and str(blocker) in err.err and "Traceback" not in err.err
    assert "accuracy" not in err.out   # refused before evaluating
