"""Evaluations on another dataset in a process of their own, followed through files as retraining runs are
(skin_core.jobs): a large dataset (tens of thousands of photos, many minutes of reading and scoring) then neither
holds the Evaluation page nor stops when its browser tab is closed or the page is left.

Each evaluation has models/runs/evaluations/<job_id>/ holding job.json (the bundle, the dataset folder, whether
unusable images are left out, the process and its start time), progress.jsonl (images read, each later step,
then the outcome) and log.txt (the process's own output). The report is saved beside the bundle
(bundle.update_report, replaced in one step), so a cancelled or crashed evaluation leaves an earlier report of the
same dataset whole. One evaluation runs at a time: two would share the CPU the app answers Diagnose with.

    python -m skin_core.evaluation_jobs <job folder>     (what `start` launches)
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import registry
from .jobs import as_the_server_reads_it, process_alive, progress_events, start_detached, stop_process_group
from .jsonfiles import json_object_or_none, read_json_object, replace_json

FOLDER = "evaluations"
OUTCOMES = ("done", "failed", "cancelled")
COUNTED = {"read": "Read {done}/{total} images", "scored": "Scored {done}/{total} images with the model"}
"""The two long steps whose progress is counted, and how each is told."""
KEEP = 20               # finished evaluations' folders kept; their reports stay beside the bundles regardless
STARTING = ".starting"  # held while one start checks that none runs and launches its process
CANCEL_WAIT_S = 10


class EvaluationJobError(RuntimeError):
    """An evaluation that cannot be started or stopped, with the reason."""


class EvaluationCancelled(Exception):
    """Raised in the evaluating process when it is asked to stop (SIGTERM)."""


@dataclass
class EvaluationJob:
    """An evaluation as the Evaluation page shows it, derived from its files and its process."""
    job_id: str
    bundle: str
    dataset: str
    status: str                  # running, done, failed, cancelled
    started: float
    progress: float              # share of the images read, then of those scored
    step: str                    # what it is doing now, in words
    report_name: str | None = None
    error: str | None = None
    ended: float | None = None   # when it recorded its outcome (None while running, or if it died unrecorded)


def jobs_dir(root: Path | None = None) -> Path:
    return (root or registry.models_dir()) / "runs" / FOLDER


def start(bundle, dataset: str, *, leave_out: bool, root: Path | None = None) -> str:
    """Launch the evaluation of `bundle` on the dataset folder; returns its id. The dataset is read and checked
    first (labels, image files: seconds even for a large one), so a folder that cannot be evaluated is refused
    here with the reason, and nothing is launched."""
    from . import data
    from .bundle import read_manifest
    classes = read_manifest(Path(bundle))["classes"]
    data.load_dataset(dataset, skip_bad=leave_out, classes=classes, every_class=False,
                      skip_other_labels=leave_out)                   # raises DatasetError, named
    folder_root = jobs_dir(root)
    try:
        folder_root.mkdir(parents=True, exist_ok=True)
        with _starting(folder_root):
            running = running_job(root)
            if running is not None:
                raise EvaluationJobError(f"An evaluation of {running.dataset} is still running; wait for it to "
                                         "finish or cancel it.")
            now = time.time()          # to the millisecond, so that ids sort as the evaluations started
            job_id = time.strftime("eval-%Y%m%d-%H%M%S", time.localtime(now)) + \
                f".{int(now * 1000) % 1000:03d}-{uuid.uuid4().hex[:4]}"
            _launch(folder_root / job_id, {"job_id": job_id, "bundle": str(Path(bundle).resolve()),
                                           "dataset": as_the_server_reads_it(dataset), "leave_out": leave_out,
                                           "started": now})
    except OSError as exc:         # a read-only models folder, no process to be had
        raise EvaluationJobError(f"The evaluation could not be started: {exc.strerror or exc}.") from None
    _forget_old(root)
    return job_id


@contextmanager
def _starting(folder_root: Path):
    """Only one start at a time checks for a running evaluation and launches one; a marker left by a start that
    died (older than a minute) is cleared."""
    marker = folder_root / STARTING
    try:
        handle = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if time.time() - marker.stat().st_mtime < 60:
            raise EvaluationJobError("Another evaluation is being started; try again in a moment.") from None
        marker.unlink(missing_ok=True)
        handle = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    try:
        yield
    finally:
        os.close(handle)
        marker.unlink(missing_ok=True)


def _launch(folder: Path, job: dict) -> None:
    folder.mkdir(parents=True)
    try:
        replace_json(folder / "job.json", job, indent=2)
        start_detached([sys.executable, "-m", "skin_core.evaluation_jobs", str(folder)], folder, job)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)    # no process, no job: nothing may read as being started
        raise


def _record(job_id: str, root: Path | None) -> dict:
    job = json_object_or_none(jobs_dir(root) / job_id / "job.json")
    if job is None:
        raise EvaluationJobError(f"The record of evaluation {job_id} cannot be read.")
    return job


def state(job_id: str, root: Path | None = None) -> EvaluationJob:
    folder = jobs_dir(root) / job_id
    job = _record(job_id, root)
    events = progress_events(folder)
    outcome = next((e for e in reversed(events) if e["event"] in OUTCOMES), None)
    latest = next((e for e in reversed(events) if e["event"] in COUNTED or e["event"] == "step"), None)
    counted = next((e for e in reversed(events) if e["event"] in COUNTED), None)
    step = "Starting: loading the model" if latest is None else latest.get("text") or \
        COUNTED[latest["event"]].format(**latest)
    report_name, error, ended = None, None, None
    if outcome is not None:
        ended = outcome.get("time")
        status, report_name, error = outcome["event"], outcome.get("report"), outcome.get("error")
    elif process_alive(job.get("pid"), job.get("pid_started")) or \
            (job.get("pid") is None and time.time() - job["started"] < 60):     # its process being started
        status = "running"
    elif job.get("cancelling"):
        status = "cancelled"
    else:
        status, error = "failed", "The evaluation process ended without finishing (it crashed or was killed)."
    return EvaluationJob(job_id, job["bundle"], job["dataset"], status, job["started"],
                         counted["done"] / max(counted["total"], 1) if counted else 0.0, step, report_name, error,
                         ended)


def _job_ids(root: Path | None) -> list[str]:
    """Every evaluation's id, newest first."""
    return sorted((p.name for p in jobs_dir(root).glob("eval-*") if (p / "job.json").exists()), reverse=True)


def running_job(root: Path | None = None) -> EvaluationJob | None:
    for job_id in _job_ids(root):
        try:
            job = state(job_id, root)
        except EvaluationJobError:
            continue
        if job.status == "running":
            return job
    return None


def latest(bundle, root: Path | None = None) -> EvaluationJob | None:
    """The most recent evaluation of this bundle, running or not."""
    wanted = str(Path(bundle).resolve())
    for job_id in _job_ids(root):
        if (json_object_or_none(jobs_dir(root) / job_id / "job.json") or {}).get("bundle") == wanted:
            try:
                return state(job_id, root)
            except EvaluationJobError:
                return None
    return None


def cancel(job_id: str, root: Path | None = None) -> None:
    """Stop a running evaluation: asked first (it records 'cancelled' and saves nothing), then killed."""
    job = _record(job_id, root)
    try:
        replace_json(jobs_dir(root) / job_id / "job.json", {**job, "cancelling": True}, indent=2)
        stop_process_group(job.get("pid"), job.get("pid_started"), wait_s=CANCEL_WAIT_S)
    except OSError as exc:
        raise EvaluationJobError(f"The evaluation could not be cancelled: {exc.strerror or exc}.") from None


def _forget_old(root: Path | None) -> None:
    """Remove finished evaluations' folders beyond the newest KEEP (their reports stay beside the bundles)."""
    for job_id in _job_ids(root)[KEEP:]:
        try:
            if state(job_id, root).status != "running":
                shutil.rmtree(jobs_dir(root) / job_id, ignore_errors=True)
        except EvaluationJobError:
            shutil.rmtree(jobs_dir(root) / job_id, ignore_errors=True)


def _stop(signum, frame):
    raise EvaluationCancelled()


def run(folder: Path) -> int:
    """The evaluating process: evaluate, save the report beside the bundle, record the outcome."""
    signal.signal(signal.SIGTERM, _stop)
    job = read_json_object(folder / "job.json")
    from .bundle import BundleError, dataset_report_file, update_report
    from .data import DatasetError
    from .predict import Predictor
    from .progress import ProgressLog
    log = ProgressLog(str(folder / "progress.jsonl"))
    try:
        report = Predictor.from_path(job["bundle"]).evaluate(
            job["dataset"], skip_bad=job["leave_out"], skip_other_labels=job["leave_out"],
            on_progress=lambda done, total: log.event("read", done=done, total=total),
            on_stage=lambda text: log.event("step", f"{text}...", text=f"{text}..."),
            on_scoring=lambda done, total: log.event("scored", done=done, total=total))
        signal.signal(signal.SIGTERM, signal.SIG_IGN)        # the report is written whole or not at all
        name = dataset_report_file(job["dataset"])
        update_report(job["bundle"], name, report)
    except EvaluationCancelled:
        log.event("cancelled", "Cancelled; nothing was saved.")
        return 1
    except (DatasetError, BundleError, OSError) as exc:
        log.event("failed", str(exc), error=str(exc))
        return 2
    except Exception as exc:       # a fault of this program: the log keeps the traceback, the page the reason
        traceback.print_exc()
        log.event("failed", error=f"The evaluation failed unexpectedly ({type(exc).__name__}: {exc}); the log "
                                  f"in {folder} has the details.")
        return 2
    log.event("done", f"Saved as {name} beside the bundle.", report=name)
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
