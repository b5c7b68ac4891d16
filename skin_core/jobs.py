"""Retraining jobs: `train.py` in its own process, one at a time, followed through files.

Each run gets models/runs/<run_id>/ holding run.json (the TrainConfig train.py is started with), job.json
(the settings asked for, pid, times), progress.jsonl (the
trainer's JSON lines), log.txt (its output), checkpoint/ while it trains (its state after every
epoch, so a cancelled or crashed run can be continued) and, when it succeeds, bundle/. The state of a run is
derived from those files and from whether its process is alive, so a page reload, a closed browser
or a restarted app server loses nothing. A lock file keeps it to one job per server; a lock whose
process is gone is stale and is cleared.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from . import registry
from .jsonfiles import json_object_or_none, replace_file, replace_json
from .resume import last_saved_epoch
from .run_config import TrainConfig

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train.py"
LOCK = ".lock"
LAUNCH_SECONDS = 60     # a launch writes the lock within this long of creating it
CHECKPOINT = "checkpoint"
RUN_CONFIG = "run.json"
JOB_FILES = {"out", "name", "progress_file", "checkpoint"}   # settings a job decides for its run (_job_files)
TERMINAL = {"done": "done", "cancelled": "cancelled", "error": "failed"}


class JobError(RuntimeError):
    """A job request that cannot be honoured, with the reason."""


@dataclass
class JobState:
    """A launched run as the Retrain page shows it: derived from its files and its process (the fitting's own
    saved state is skin_core.resume.FitState, read only through resume.last_saved_epoch)."""
    run_id: str
    status: str                 # running, done, cancelled, failed
    config: dict
    started: float
    events: list[dict]           # every attempt's, for the curves
    error: str | None = None
    attempt_from: int = 0        # where the latest attempt's events begin (a continued run has several)

    @property
    def last_batch(self) -> dict | None:
        """The latest attempt's progress (a continued run first re-reads its dataset)."""
        batches = [e for e in self.events[self.attempt_from:] if e["event"] in ("batch", "epoch")]
        return batches[-1] if batches else None


def runs_dir(root: Path | None = None) -> Path:
    return (root or registry.models_dir()) / "runs"


def process_started_at(pid: int) -> float | None:
    """When process `pid` started: with the id, it names one process even after the id is reused."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_alive(pid: int | None, started: float | None = None) -> bool:
    """Whether the process is running, and is the same one that was launched when its start time was
    recorded: after a reboot or a container restart the id may belong to another process, which must
    neither hold the lock nor receive Cancel's signals."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        same = started is None or abs(process.create_time() - started) < 0.01
        return same and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def running_job(root: Path | None = None) -> str | None:
    """The run id holding the lock, clearing the lock if its process has died."""
    lock = runs_dir(root) / LOCK
    held = json_object_or_none(lock)
    if held is None:
        return None
    if process_alive(held.get("pid"), held.get("pid_started")):
        return held["run_id"]
    _remove_lock_if(lock, _holder_dead)
    return None


def _holder_dead(lock: Path) -> bool:
    """Whether the lock names a process that has ended (an empty lock is a launch under way, not a dead job)."""
    held = json_object_or_none(lock)
    return held is not None and not process_alive(held.get("pid"), held.get("pid_started"))


def start(config: dict, root: Path | None = None) -> str:
    """Launch train.py for `config` (TrainConfig's settings by field name, less the files the job names
    itself); returns the run id. Settings TrainConfig would refuse are refused here, before anything starts."""
    run_id = time.strftime("run-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    own = set(config) & JOB_FILES
    if own:
        raise JobError(f"The job names its own {', '.join(sorted(own))}; leave {'them' if len(own) > 1 else 'it'} out.")
    try:
        settings = TrainConfig.from_settings({**config, **_job_files(runs_dir(root) / run_id, run_id),
                                              **_folders_as_the_server_reads_them(config)})
    except ValueError as exc:
        raise JobError(f"These settings cannot train: {exc}.") from None
    return _with_lock(run_id, root, lambda runs, fd: _launch(runs / run_id, config, settings, fd))


def as_the_server_reads_it(folder) -> str:
    """A folder the server was given, as an absolute path: a job's process starts in the repository, which need
    not be the folder the server was started in and read it from."""
    return os.path.abspath(Path(folder).expanduser())


def _folders_as_the_server_reads_them(config: dict) -> dict:
    """The dataset and bundle folders of `config` (as_the_server_reads_it)."""
    folders = {key: config[key] for key in ("data", "init_bundle", "split_from") if config.get(key)}
    return {key: as_the_server_reads_it(value) if isinstance(value, str) else [as_the_server_reads_it(v) for v in value]
            for key, value in folders.items()}


def _job_files(run_dir: Path, run_id: str) -> dict:
    """The settings a job decides for its run: where the bundle, progress and checkpoint go, and its name."""
    return {"out": str(run_dir / "bundle"), "name": run_id, "progress_file": str(run_dir / "progress.jsonl"),
            "checkpoint": str(run_dir / CHECKPOINT)}


def saved_progress(run_id: str, root: Path | None = None) -> dict | None:
    """What a stopped run saved to continue from ({"epoch": last finished epoch, "finished": fitting was
    over}), or None when it is not stopped or saved nothing it could continue from (a state file naming
    weights that are gone is not offered: continuing would only fail)."""
    if state(run_id, root).status not in ("cancelled", "failed"):
        return None
    return last_saved_epoch(runs_dir(root) / run_id / CHECKPOINT)


def resume(run_id: str, root: Path | None = None) -> None:
    """Start a cancelled or crashed run again with the same command; it continues from its checkpoint."""
    if state(run_id, root).status == "running":
        raise JobError(f"{run_id} is still training.")
    if saved_progress(run_id, root) is None:
        raise JobError(f"{run_id} has no saved epoch to continue from.")
    _with_lock(run_id, root, lambda runs, fd: _relaunch(runs / run_id, fd))


def _with_lock(run_id: str, root: Path | None, launch) -> str:
    """Take the one-job lock, run `launch(runs_folder, lock_fd)`, and release the lock if that fails."""
    runs = runs_dir(root)
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(f"Runs cannot be saved in {runs}: {exc.strerror or exc}.") from None
    busy = running_job(root)
    if busy:
        raise JobError(f"A training job is already running ({busy}); wait for it or cancel it first.")
    _clear_abandoned_lock(runs / LOCK)
    try:
        fd = os.open(runs / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise JobError("Another training job is being launched right now.") from None
    except OSError as exc:
        raise JobError(f"Runs cannot be saved in {runs}: {exc.strerror or exc}.") from None
    try:
        launch(runs, fd)
        return run_id
    except OSError as exc:
        (runs / LOCK).unlink(missing_ok=True)
        raise JobError(f"The run could not be started: {exc.strerror or exc}.") from None
    except BaseException:
        (runs / LOCK).unlink(missing_ok=True)
        raise


def _clear_abandoned_lock(lock: Path) -> None:
    """Remove a lock that names no job and is older than any launch takes (a launcher killed between
    creating the lock and writing it): otherwise it would read as "being launched" for ever."""
    try:
        if time.time() - lock.stat().st_mtime <= LAUNCH_SECONDS:
            return
    except OSError:
        return
    _remove_lock_if(lock, lambda taken: time.time() - taken.stat().st_mtime > LAUNCH_SECONDS
                    and json_object_or_none(taken) is None)


def _remove_lock_if(lock: Path, stale) -> None:
    """Remove the lock if `stale(path)` holds for it, judged under a name of its own: the lock is first renamed
    away (one remover wins the rename), so one that looked at an old lock cannot remove a fresh one another
    launcher has just created; a lock that turns out not to be stale is linked back (never over a newer one)."""
    taken = lock.with_name(f"{lock.name}.judged-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(lock, taken)
    except OSError:
        return
    try:
        if not stale(taken):
            os.link(taken, lock)                 # not stale after all: put it back
    except OSError:
        pass
    finally:
        taken.unlink(missing_ok=True)


def _launch(run_dir: Path, config: dict, settings: TrainConfig, lock_fd: int) -> None:
    """Start train.py on `settings` (checked by start, the job's own files in `run_dir`); job.json keeps `config`,
    the settings asked for."""
    run_dir.mkdir()
    replace_file(run_dir / RUN_CONFIG, lambda handle: handle.write(settings.to_json()))
    command = [sys.executable, str(TRAIN_SCRIPT), "--config", str(run_dir / RUN_CONFIG)]
    job = {"run_id": run_dir.name, "config": config, "started": time.time(), "command": command}
    _spawn(run_dir, job, lock_fd, log_mode="wb")


def _relaunch(run_dir: Path, lock_fd: int) -> None:
    job = json_object_or_none(run_dir / "job.json")
    job.pop("status", None)
    # the earlier attempt's last word ("cancelled", an error) no longer decides the state
    job["events_from"] = len(progress_events(run_dir))
    job.setdefault("resumed", []).append(time.time())
    _spawn(run_dir, job, lock_fd, log_mode="ab")


def _spawn(run_dir: Path, job: dict, lock_fd: int, log_mode: str) -> None:
    start_detached(job["command"], run_dir, job, log_mode=log_mode)
    with os.fdopen(lock_fd, "w") as handle:
        json.dump({"run_id": job["run_id"], "pid": job["pid"], "pid_started": job["pid_started"]}, handle)


def start_detached(command: list[str], folder: Path, job: dict, *, log_mode: str = "wb") -> None:
    """Start `command` from the repository's root in a session of its own (closing the page leaves it running;
    Cancel signals its whole group), its output in folder/log.txt, and record its process id and start time in
    `job`, written to folder/job.json (a reused process id is then not taken for it)."""
    with open(folder / "log.txt", log_mode) as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=TRAIN_SCRIPT.parent, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    job.update(pid=process.pid, pid_started=process_started_at(process.pid))
    replace_json(folder / "job.json", job, indent=2)


def progress_events(run_dir: Path) -> list[dict]:
    """The JSON lines a job's process has written to progress.jsonl so far."""
    events = []
    progress = run_dir / "progress.jsonl"
    if progress.exists():
        for line in progress.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue          # a line being written right now
    return events


def state(run_id: str, root: Path | None = None) -> JobState:
    run_dir = runs_dir(root) / run_id
    job = json_object_or_none(run_dir / "job.json")
    if job is None:
        raise JobError(f"The record of {run_id} cannot be read (job.json is damaged); delete the run." if
                       (run_dir / "job.json").exists() else f"No such run: {run_id}")
    events = progress_events(run_dir)
    attempt_from = job.get("events_from", 0)
    final = next((e for e in reversed(events[attempt_from:]) if e["event"] in TERMINAL), None)
    marked = job.get("status")
    if final is not None:
        status, error = TERMINAL[final["event"]], final.get("error")
    elif process_alive(job.get("pid"), job.get("pid_started")):
        status, error = "running", None
    else:
        status = "cancelled" if marked == "cancelling" else "failed"
        error = None if status == "cancelled" else \
            "The training process ended without finishing (it crashed or was killed)."
    if status != "running":
        _release(run_id, job.get("pid"), root)
    return JobState(run_id, status, job.get("config", {}), job.get("started", 0.0), events, error, attempt_from)


def _release(run_id: str, pid: int | None, root: Path | None) -> None:
    """Drop the lock if this finished attempt (run and process) still holds it; its process may still be
    exiting. A continued run's new attempt holds it under another process id and keeps it."""
    def held_by_this_attempt(path: Path) -> bool:
        held = json_object_or_none(path) or {}
        return held.get("run_id") == run_id and held.get("pid") == pid

    lock = runs_dir(root) / LOCK
    if held_by_this_attempt(lock):
        _remove_lock_if(lock, held_by_this_attempt)


def cancel(run_id: str, root: Path | None = None) -> None:
    """Stop a running job; train.py catches SIGTERM, writes nothing and records 'cancelled' (unless its bundle is
    already being written: then the cancel comes too late, and the run finishes as 'done')."""
    run_dir = runs_dir(root) / run_id
    job = json_object_or_none(run_dir / "job.json") or {}
    job["status"] = "cancelling"
    pid, started = job.get("pid"), job.get("pid_started")
    try:
        replace_json(run_dir / "job.json", job, indent=2)
        stop_process_group(pid, started, wait_s=30)
    except OSError as exc:       # a read-only runs folder, a process this user may not signal
        raise JobError(f"{run_id} could not be cancelled: {exc.strerror or exc}.") from None
    _release(run_id, pid, root)


def stop_process_group(pid: int | None, started: float | None, *, wait_s: float) -> None:
    """Ask a job's process group to stop (SIGTERM: it records why and writes nothing half-way), and kill it if it
    is still there after `wait_s` seconds."""
    try:
        if process_alive(pid, started):
            os.killpg(os.getpgid(pid), signal.SIGTERM)
            deadline = time.time() + wait_s
            while process_alive(pid, started) and time.time() < deadline:
                time.sleep(0.2)
            if process_alive(pid, started):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
    except ProcessLookupError:   # it ended on its own between the check and the signal
        pass


def _continuable_runs_from(run_id: str, root: Path | None) -> list[str]:
    """Runs whose weights or split come from `run_id`'s bundle and may still read it: one training now
    (continuing it after a cancel reads the bundle again), or one stopped with a saved epoch."""
    folder = (runs_dir(root) / run_id).resolve()
    waiting = []
    for other in list_runs(root):
        config = (json_object_or_none(runs_dir(root) / other / "job.json") or {}).get("config", {})
        sources = [config.get(key) for key in ("init_bundle", "split_from") if config.get(key)]
        if other == run_id or not any(folder in Path(source).resolve().parents for source in sources):
            continue
        if state(other, root).status == "running" or saved_progress(other, root) is not None:
            waiting.append(other)
    return waiting


def list_runs(root: Path | None = None) -> list[str]:
    runs = runs_dir(root)
    return sorted((p.name for p in runs.glob("run-*") if (p / "job.json").exists()), reverse=True)


def log_tail(run_id: str, lines: int = 20, root: Path | None = None) -> str:
    path = runs_dir(root) / run_id / "log.txt"
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def delete(run_id: str, root: Path | None = None) -> None:
    """Remove a finished run that is not the active model."""
    if registry.active_name(root) == run_id:
        raise JobError("This run is the active model; promote another model before deleting it.")
    record = runs_dir(root) / run_id / "job.json"
    if record.exists() and json_object_or_none(record) is None:     # a damaged record: only the lock can say it runs
        training = running_job(root) == run_id
    else:
        training = state(run_id, root).status == "running"
    if training:
        raise JobError("This run is still training; cancel it first.")
    waiting = _continuable_runs_from(run_id, root)
    if waiting:
        raise JobError(f"{', '.join(waiting)} started from this run's model and still needs it (training now, or "
                       "stopped with saved epochs to continue from); delete that run first.")
    try:
        shutil.rmtree(runs_dir(root) / run_id)
    except OSError as exc:
        raise JobError(f"The run could not be deleted: {exc.strerror or exc}.") from None
