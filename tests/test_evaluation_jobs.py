"""Evaluations on another dataset in a process of their own: checked before launch, one at a time, followed
through their files, cancelled or killed without touching the report an earlier one saved."""
import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from conftest import SAMPLE, make_folder_dataset
from skin_core import evaluation_jobs
from skin_core.bundle import dataset_report_file
from skin_core.data import DatasetError
from skin_core.jobs import progress_events


def ended(job_id: str, timeout_s: float = 300) -> evaluation_jobs.EvaluationJob:
    deadline = time.time() + timeout_s
    while (job := evaluation_jobs.state(job_id)).status == "running":
        assert time.time() < deadline, "the evaluation did not end"
        time.sleep(0.5)
    return job


def test_a_folder_that_cannot_be_evaluated_is_refused_before_anything_starts(models_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="is empty"):
        evaluation_jobs.start(models_dir / "default", str(tmp_path / "empty"), leave_out=False)
    with pytest.raises(DatasetError, match="not found"):
        evaluation_jobs.start(models_dir / "default", str(tmp_path / "nowhere"), leave_out=False)
    assert not list(evaluation_jobs.jobs_dir().glob("eval-*"))
    assert evaluation_jobs.latest(models_dir / "default") is None


def test_an_evaluation_whose_process_cannot_start_leaves_no_job_behind(models_dir, monkeypatch):
    def no_process(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(subprocess, "Popen", no_process)
    with pytest.raises(evaluation_jobs.EvaluationJobError, match="could not be started: Resource temporarily"):
        evaluation_jobs.start(models_dir / "default", str(SAMPLE), leave_out=False)
    assert evaluation_jobs.running_job() is None            # nothing reads as starting, so a retry may go ahead
    assert not list(evaluation_jobs.jobs_dir().glob("eval-*"))
    monkeypatch.undo()
    job = ended(evaluation_jobs.start(models_dir / "default", str(SAMPLE), leave_out=False))
    assert job.status == "done"


def test_one_at_a_time_a_cancel_keeps_the_earlier_report_and_a_finished_one_replaces_it(models_dir):
    bundle = models_dir / "default"
    earlier = bundle / dataset_report_file(str(SAMPLE))
    earlier.write_text('{"n": 1, "confusion_matrix": [[1]]}')
    first = evaluation_jobs.start(bundle, str(SAMPLE), leave_out=False)
    assert evaluation_jobs.state(first).status == "running"
    with pytest.raises(evaluation_jobs.EvaluationJobError, match=f"An evaluation of {SAMPLE} is still running"):
        evaluation_jobs.start(bundle, str(SAMPLE), leave_out=False)
    evaluation_jobs.cancel(first)
    job = evaluation_jobs.state(first)
    assert job.status == "cancelled" and job.report_name is None
    assert earlier.read_text() == '{"n": 1, "confusion_matrix": [[1]]}'

    second = evaluation_jobs.start(bundle, str(SAMPLE), leave_out=False)
    assert evaluation_jobs.latest(bundle).job_id == second
    job = ended(second)
    assert job.status == "done" and job.report_name == earlier.name and job.progress == 1.0 and job.ended
    report = json.loads(earlier.read_text())
    split = pd.read_csv(bundle / "split.csv")
    assert report["n"] == (split["subset"] == "test").sum() and report["dataset"] == str(SAMPLE)
    scored = [e for e in progress_events(evaluation_jobs.jobs_dir() / second) if e["event"] == "scored"]
    assert scored and scored[-1]["done"] == scored[-1]["total"] == report["n"]      # the page follows the scoring


def test_an_evaluation_the_dataset_fails_inside_its_process_says_why(models_dir, sample_meta, tmp_path):
    split = pd.read_csv(models_dir / "default" / "split.csv", dtype=str)
    learnt = sample_meta[sample_meta["image_id"].isin(split.loc[split["subset"] == "train", "image_id"])]
    folder = make_folder_dataset(tmp_path / "learnt", learnt)     # reads fine; every image was trained on
    job = ended(evaluation_jobs.start(models_dir / "default", str(folder), leave_out=False))
    assert job.status == "failed" and f"All {len(learnt)} images of this dataset" in job.error
    assert not list((models_dir / "default").glob("evaluation-*.json"))


def test_a_killed_evaluation_is_reported_failed_and_frees_the_way(models_dir):
    bundle = models_dir / "default"
    job_id = evaluation_jobs.start(bundle, str(SAMPLE), leave_out=False)
    record = json.loads((evaluation_jobs.jobs_dir() / job_id / "job.json").read_text())
    os.killpg(os.getpgid(record["pid"]), signal.SIGKILL)
    job = ended(job_id, timeout_s=30)
    assert job.status == "failed" and "ended without finishing" in job.error
    assert evaluation_jobs.running_job() is None
    assert not list(bundle.glob("evaluation-*.json"))


def test_only_the_newest_finished_evaluations_keep_their_folders(models_dir, monkeypatch):
    monkeypatch.setattr(evaluation_jobs, "KEEP", 2)
    for minute in range(3):                     # three evaluations that ended earlier today
        folder = evaluation_jobs.jobs_dir() / f"eval-20260101-10{minute}000.000-abcd"
        folder.mkdir(parents=True)
        (folder / "job.json").write_text(json.dumps({"bundle": str(models_dir / "default"), "dataset": "d",
                                                     "started": 1.0, "pid": None}))
        (folder / "progress.jsonl").write_text(json.dumps({"event": "done", "time": 2.0, "report": "r.json"}))
    newest = evaluation_jobs.start(models_dir / "default", str(SAMPLE), leave_out=False)
    evaluation_jobs.cancel(newest)
    kept = sorted(p.name for p in evaluation_jobs.jobs_dir().glob("eval-*"))
    assert kept == ["eval-20260101-102000.000-abcd", newest]


def test_a_folder_named_relative_to_the_server_is_evaluated_there(models_dir, monkeypatch, sample_meta, tmp_path):
    split = pd.read_csv(models_dir / "default" / "split.csv", dtype=str)
    unseen = sample_meta[sample_meta["image_id"].isin(split.loc[split["subset"] == "test", "image_id"])]
    make_folder_dataset(tmp_path / "clinic", unseen)
    monkeypatch.chdir(tmp_path)                  # the server's folder; the evaluating process starts elsewhere
    job = ended(evaluation_jobs.start(models_dir / "default", "clinic", leave_out=False))
    assert job.status == "done" and job.dataset == str(tmp_path / "clinic")
