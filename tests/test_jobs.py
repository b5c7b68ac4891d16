"""Retraining jobs as real processes: lifecycle, promote and roll back, cancel, crashes, the lock."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest

from skin_core import access, jobs, registry
from skin_core.bundle import BundleError
from skin_core.predict import Predictor
from conftest import SAMPLE, make_ham_dataset

# the head alone: these tests are about processes, and tracing a fine-tuning step costs ~13 s per run
# (conftest's tiny_bundle trains both phases)
TINY = {"epochs": 2, "head_epochs": 2, "img_size": 32, "alpha": 0.25, "weights": "none", "batch_size": 8}


def wait_for(run_id, root, condition, timeout=400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = jobs.state(run_id, root)
        if condition(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"timed out; last state {state.status}, log:\n{jobs.log_tail(run_id, 30, root)}")


def snapshot(models_dir):
    """Every file outside runs/, with its content hash: what a job must never touch."""
    from skin_core.bundle import sha256_file
    return {str(p.relative_to(models_dir)): sha256_file(p) for p in sorted(models_dir.rglob("*"))
            if p.is_file() and "runs" not in p.relative_to(models_dir).parts}


def test_lifecycle_launch_progress_done_promote_serve_rollback(models_dir):
    run_id = jobs.start({"data": str(SAMPLE), **TINY}, models_dir)
    assert jobs.running_job(models_dir) == run_id
    with pytest.raises(jobs.JobError, match=run_id):
        jobs.start({"data": str(SAMPLE), **TINY}, models_dir)
    state = wait_for(run_id, models_dir, lambda s: s.status != "running")
    assert state.status == "done", jobs.log_tail(run_id, 30, models_dir)
    assert [e["epoch"] for e in state.events if e["event"] == "epoch"] == [1, 2]
    assert jobs.running_job(models_dir) is None
    assert run_id in registry.list_bundles(models_dir)

    default_checksum = json.loads((models_dir / "default" / "manifest.json").read_text())["files"]["model.keras"]
    registry.promote(run_id, models_dir)
    assert registry.active_name(models_dir) == run_id
    served = Predictor.from_path(registry.active_path(models_dir))
    assert served.bundle.manifest["name"] == run_id
    with pytest.raises(jobs.JobError, match="active model"):
        jobs.delete(run_id, models_dir)
    assert registry.rollback(models_dir) == "default"
    assert registry.active_name(models_dir) == "default"
    assert json.loads((models_dir / "default" / "manifest.json").read_text())["files"]["model.keras"] == default_checksum
    jobs.delete(run_id, models_dir)
    assert run_id not in jobs.list_runs(models_dir)


def test_cancel_stops_the_process_and_writes_no_bundle(models_dir):
    run_id = jobs.start({"data": str(SAMPLE), **TINY, "epochs": 200}, models_dir)
    wait_for(run_id, models_dir, lambda s: any(e["event"] == "batch" for e in s.events))
    jobs.cancel(run_id, models_dir)
    state = jobs.state(run_id, models_dir)
    assert state.status == "cancelled"
    assert not (models_dir / "runs" / run_id / "bundle").exists()
    assert jobs.running_job(models_dir) is None
    assert registry.active_name(models_dir) == "default"


def test_a_cancelled_run_continues_from_its_last_saved_epoch(models_dir):
    """Cancelled once an epoch is saved (while the fine-tuning step is being traced, as a rule), then continued."""
    epochs = 6
    run_id = jobs.start({"data": str(SAMPLE), **TINY, "epochs": epochs, "head_epochs": 1}, models_dir)
    run_dir = models_dir / "runs" / run_id
    saved_file = run_dir / jobs.CHECKPOINT / "state.json"
    wait_for(run_id, models_dir, lambda s: saved_file.is_file() or s.status != "running")
    jobs.cancel(run_id, models_dir)
    assert jobs.state(run_id, models_dir).status == "cancelled" and not (run_dir / "bundle").exists()
    saved = jobs.saved_progress(run_id, models_dir)["epoch"]
    assert 1 <= saved < epochs
    saved_epoch = run_dir / jobs.CHECKPOINT / json.loads(saved_file.read_text())["saved"]
    saved_epoch.rename(saved_epoch.with_name("moved-away"))          # a damaged checkpoint is not offered
    assert jobs.saved_progress(run_id, models_dir) is None
    with pytest.raises(jobs.JobError, match="no saved epoch"):
        jobs.resume(run_id, models_dir)
    saved_epoch.with_name("moved-away").rename(saved_epoch)

    jobs.resume(run_id, models_dir)
    restarted = jobs.state(run_id, models_dir)
    assert restarted.status == "running"              # the first attempt's "cancelled" is history
    assert restarted.last_batch is None               # the new process is starting: no progress of its own yet
    with pytest.raises(jobs.JobError, match="still training"):
        jobs.resume(run_id, models_dir)
    state = wait_for(run_id, models_dir, lambda s: s.status != "running")
    assert state.status == "done", jobs.log_tail(run_id, 30, models_dir)
    resumed = [e["epoch"] for e in state.events if e["event"] == "resume"]
    trained = [e["epoch"] for e in state.events[state.attempt_from:] if e["event"] == "epoch"]
    assert resumed == [saved] and trained == list(range(saved + 1, epochs + 1))
    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    assert manifest["training"]["resumed_at_epochs"] == [saved]
    assert list(pd.read_csv(run_dir / "bundle" / "history.csv")["epoch"]) == list(range(1, epochs + 1))
    assert not (run_dir / jobs.CHECKPOINT).exists()          # the bundle holds everything now
    assert jobs.saved_progress(run_id, models_dir) is None
    assert jobs.running_job(models_dir) is None


def test_a_training_error_is_reported_readably(models_dir, tmp_path, sample_meta):
    data = make_ham_dataset(tmp_path / "ham", sample_meta)
    broken = next(data.rglob("*.jpg"))
    broken.write_bytes(b"garbage")
    run_id = jobs.start({"data": str(data), **TINY}, models_dir)
    state = wait_for(run_id, models_dir, lambda s: s.status != "running")
    assert state.status == "failed"
    assert "1 images cannot be read" in state.error and broken.name in state.error
    assert jobs.running_job(models_dir) is None


@pytest.mark.parametrize("moment", ["batch", "evaluate"])   # while fitting; while the bundle is being made
def test_a_killed_process_is_marked_failed_and_changes_nothing(models_dir, moment):
    before = snapshot(models_dir)
    epochs = 200 if moment == "batch" else 2
    run_id = jobs.start({"data": str(SAMPLE), **TINY, "epochs": epochs}, models_dir)
    wait_for(run_id, models_dir, lambda s: any(e["event"] == moment for e in s.events))
    pid = json.loads((models_dir / "runs" / run_id / "job.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    state = wait_for(run_id, models_dir, lambda s: s.status != "running", timeout=30)
    bundle = models_dir / "runs" / run_id / "bundle"
    if state.status == "failed":
        assert "without finishing" in state.error
        assert not bundle.exists()
    else:       # the kill came after the last write: then the bundle must be whole
        assert state.status == "done" and moment == "evaluate"
        Predictor.from_path(bundle)
    assert jobs.running_job(models_dir) is None
    assert snapshot(models_dir) == before
    assert registry.active_name(models_dir) == "default"
    Predictor.from_path(registry.active_path(models_dir))


def test_a_stale_lock_is_cleared(models_dir):
    runs = models_dir / "runs"
    runs.mkdir()
    (runs / ".lock").write_text(json.dumps({"run_id": "run-ghost", "pid": 2 ** 22 + 12345}))
    assert jobs.running_job(models_dir) is None
    assert not (runs / ".lock").exists()


@pytest.mark.parametrize("meanwhile", ["a live job", "a launch not yet written"])
def test_clearing_a_dead_jobs_lock_never_removes_a_live_one_written_in_its_place(models_dir, monkeypatch, meanwhile):
    """Two pages can find the same dead lock: the one that clears it second must not remove the lock the first
    has taken since for its own launch."""
    live = {"run_id": "run-live", "pid": os.getpid(), "pid_started": psutil.Process().create_time()}
    written_meanwhile = json.dumps(live) if meanwhile == "a live job" else ""
    runs = models_dir / "runs"
    runs.mkdir()
    (runs / ".lock").write_text(json.dumps({"run_id": "run-ghost", "pid": 2 ** 22 + 12345}))
    judged = []
    original = jobs.process_alive

    def another_launch_in_between(pid, started=None):
        if not judged:                        # this page has judged the ghost dead; another launches meanwhile
            (runs / ".lock").write_text(written_meanwhile)
        judged.append(pid)
        return original(pid, started)

    monkeypatch.setattr(jobs, "process_alive", another_launch_in_between)
    assert jobs.running_job(models_dir) is None                    # what it saw was dead...
    assert (runs / ".lock").read_text() == written_meanwhile       # ...but the lock written since stays
    assert [p.name for p in runs.iterdir()] == [".lock"]           # and nothing is left under another name
    if written_meanwhile:
        jobs._release("run-live", os.getpid(), models_dir)         # its own attempt's end removes it
        assert not (runs / ".lock").exists()


def test_a_lock_a_killed_launcher_left_empty_blocks_only_while_a_launch_could_still_be_writing_it(models_dir):
    runs = models_dir / "runs"
    runs.mkdir()
    (runs / ".lock").write_text("")
    with pytest.raises(jobs.JobError, match="being launched right now"):
        jobs.start({"data": str(models_dir / "no-such-dataset"), "epochs": 1}, models_dir)
    abandoned = time.time() - jobs.LAUNCH_SECONDS - 5
    os.utime(runs / ".lock", (abandoned, abandoned))
    run_id = jobs.start({"data": str(models_dir / "no-such-dataset"), "epochs": 1}, models_dir)
    assert json.loads((runs / ".lock").read_text())["run_id"] == run_id
    assert wait_for(run_id, models_dir, lambda s: s.status == "failed").error


def test_a_reused_process_id_is_not_taken_for_the_job(models_dir):
    # after a restart the job's process id can belong to another process: it must neither hold the lock
    # nor be signalled by Cancel
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        run_dir = models_dir / "runs" / "run-20260101-000000-abcd"
        run_dir.mkdir(parents=True)
        earlier = psutil.Process(stranger.pid).create_time() - 3600
        (run_dir / "job.json").write_text(json.dumps({"run_id": run_dir.name, "config": {}, "started": time.time(),
                                                      "pid": stranger.pid, "pid_started": earlier}))
        (run_dir.parent / ".lock").write_text(json.dumps({"run_id": run_dir.name, "pid": stranger.pid,
                                                          "pid_started": earlier}))
        assert jobs.running_job(models_dir) is None
        assert jobs.state(run_dir.name, models_dir).status == "failed"
        jobs.cancel(run_dir.name, models_dir)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_run_that_a_stopped_run_started_from_is_kept_until_that_run_is_done_with(models_dir):
    runs = models_dir / "runs"
    for run_id, config in (("run-20260101-000000-aaaa", {}),
                           ("run-20260101-000100-bbbb", {"init_bundle": str(runs / "run-20260101-000000-aaaa" / "bundle"),
                                                         "split_from": str(runs / "run-20260101-000000-aaaa" / "bundle")})):
        (runs / run_id / jobs.CHECKPOINT).mkdir(parents=True)
        (runs / run_id / "job.json").write_text(json.dumps({"run_id": run_id, "config": config, "started": 0}))
    # the second run crashed after saving epoch 3: continuing it reads the first run's bundle
    checkpoint = runs / "run-20260101-000100-bbbb" / jobs.CHECKPOINT
    (checkpoint / "epoch-003").mkdir()
    (checkpoint / "epoch-003" / "weights.npz").write_bytes(b"")
    (checkpoint / "state.json").write_text(json.dumps({"epoch": 3, "saved": "epoch-003"}))
    with pytest.raises(jobs.JobError, match="run-20260101-000100-bbbb started from this run's model"):
        jobs.delete("run-20260101-000000-aaaa", models_dir)
    assert (runs / "run-20260101-000000-aaaa").is_dir()
    # a run training from it now (after a cancel, continuing would read it again) keeps it too
    training = runs / "run-20260101-000100-bbbb" / "job.json"
    training.write_text(json.dumps({**json.loads(training.read_text()), "pid": os.getpid(),
                                    "pid_started": psutil.Process().create_time()}))
    shutil.rmtree(checkpoint)
    with pytest.raises(jobs.JobError, match="bbbb started from this run's model and still needs it"):
        jobs.delete("run-20260101-000000-aaaa", models_dir)
    training.write_text(json.dumps({**json.loads(training.read_text()), "pid": None}))
    jobs.delete("run-20260101-000100-bbbb", models_dir)
    jobs.delete("run-20260101-000000-aaaa", models_dir)
    assert jobs.list_runs(models_dir) == []


def test_a_runs_folder_that_cannot_be_written_is_a_message_and_launches_nothing(models_dir):
    (models_dir / "runs").write_text("a file where the runs folder should be")   # fails for root too, unlike chmod
    with pytest.raises(jobs.JobError, match="Runs cannot be saved in .*runs"):
        jobs.start({"data": str(SAMPLE), "epochs": 1}, models_dir)
    assert (models_dir / "runs").read_text() == "a file where the runs folder should be"


def test_promote_refuses_a_folder_that_is_not_a_bundle(models_dir):
    (models_dir / "junk").mkdir()
    with pytest.raises(BundleError):
        registry.promote("junk", models_dir)
    with pytest.raises(BundleError, match="no earlier"):
        registry.rollback(models_dir)
    assert registry.active_name(models_dir) == "default"


def test_promote_refuses_a_bundle_the_app_could_not_serve_even_with_matching_checksums(models_dir):
    from skin_core.bundle import sha256_file
    candidate = models_dir / "candidate"
    shutil.copytree(models_dir / "default", candidate)
    (candidate / "model.keras").write_bytes(b"not a Keras archive")
    manifest = json.loads((candidate / "manifest.json").read_text())
    manifest["files"]["model.keras"] = sha256_file(candidate / "model.keras")
    (candidate / "manifest.json").write_text(json.dumps(manifest))
    pointer_before = sorted(p.name for p in models_dir.rglob("*active*"))
    with pytest.raises(BundleError, match="model.keras cannot be loaded"):
        registry.promote("candidate", models_dir)
    assert registry.active_name(models_dir) == "default"
    assert sorted(p.name for p in models_dir.rglob("*active*")) == pointer_before


def test_password_gate(monkeypatch):
    monkeypatch.delenv(access.ENV_VAR, raising=False)
    assert access.required_password({}) is None and access.allowed(None, None)
    assert access.required_password({access.ENV_VAR: "s3cret"}) == "s3cret"
    monkeypatch.setenv(access.ENV_VAR, "hunter2")
    required = access.required_password({})
    assert not access.allowed(None, required) and not access.allowed("wrong", required)
    assert access.allowed("hunter2", required)


def train_script_events(tmp_path, *options) -> tuple[int, list[str]]:
    """train.py's main run in this process on the sample, its exit code and progress events; SIGTERM's
    handler (main installs its own) is put back afterwards."""
    import train as train_script
    progress = tmp_path / "progress.jsonl"
    args = train_script.get_args_parser().parse_args(
        ["--data", str(SAMPLE), "--out", str(tmp_path / "bundle"), "--progress-file", str(progress), *options])
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = train_script.main(args)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return code, [json.loads(line)["event"] for line in progress.read_text().splitlines()]


def test_a_cancel_that_tensorflow_re_raises_as_another_error_still_counts_as_cancelled(tmp_path, monkeypatch):
    """SIGTERM can land inside TensorFlow's C code, which surfaces it as e.g. SystemError."""
    from skin_core import cancellation, training

    def fit_interrupted_inside_tensorflow(config):
        try:
            os.kill(os.getpid(), signal.SIGTERM)          # train.py's handler raises TrainingCancelled here
        except cancellation.TrainingCancelled:
            raise SystemError("Objects/listobject.c:338: bad argument to internal function") from None

    monkeypatch.setattr(training, "train", fit_interrupted_inside_tensorflow)
    code, events = train_script_events(tmp_path)
    assert code == 130 and events[-1] == "cancelled" and "error" not in events
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("lost_after", ["prepare", "fit"])    # before the first batch; after fitting, before the bundle
def test_a_cancel_whose_exception_is_lost_still_stops_the_run_and_writes_nothing(tmp_path, monkeypatch, lost_after):
    """AutoGraph swallows an exception raised while it converts a step function (it logs the failed conversion
    and runs the function unconverted): a run cancelled at that moment once went on to write its bundle."""
    from skin_core import cancellation, training
    original = getattr(training, lost_after)

    def then_a_cancel_is_swallowed(*args, **kwargs):
        result = original(*args, **kwargs)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except Exception:                      # as AutoGraph's fallback to the unconverted function does
            pass
        return result

    monkeypatch.setattr(training, lost_after, then_a_cancel_is_swallowed)
    code, events = train_script_events(tmp_path, "--epochs", "2", "--head-epochs", "1", "--img-size", "32",
                                       "--alpha", "0.25", "--weights", "none", "--batch-size", "8")
    assert code == 130 and events[-1] == "cancelled" and "done" not in events and "error" not in events
    assert ("epoch" in events) == (lost_after == "fit")       # stopped at the first batch, or after both epochs
    assert not (tmp_path / "bundle").exists()
    assert not cancellation.REQUESTED.is_set()                 # a later run in this process starts uncancelled


def test_a_cancel_that_arrives_once_the_bundle_is_being_written_comes_too_late_and_the_run_completes(
        tmp_path, monkeypatch):
    """Cancel pressed as the run ends: the bundle in place must not be reported as cancelled ("nothing was
    written"), where the Retrain page would offer no Promote for it, nor its checkpoint be half removed."""
    from skin_core import bundle as bundles, cancellation
    original = bundles.write_bundle

    def then_cancel(*args, **kwargs):
        out = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)             # lands after the bundle is in place
        return out

    monkeypatch.setattr(bundles, "write_bundle", then_cancel)
    code, events = train_script_events(tmp_path, "--epochs", "1", "--head-epochs", "1", "--img-size", "32",
                                       "--alpha", "0.25", "--weights", "none", "--batch-size", "8",
                                       "--checkpoint", str(tmp_path / "checkpoint"))
    assert code == 0 and events[-1] == "done" and "cancelled" not in events
    assert Predictor.from_path(tmp_path / "bundle").classes                  # complete and loadable
    assert not (tmp_path / "checkpoint").exists()                             # its checkpoint discarded whole
    assert not cancellation.TOO_LATE.is_set() and not cancellation.REQUESTED.is_set()


def test_train_refuses_an_out_folder_that_is_not_a_bundle_before_reading_any_image(tmp_path, monkeypatch):
    """A typo in --out must never delete a folder (at the end of training a bundle replaces what is there)."""
    import train as train_script
    from skin_core import training
    monkeypatch.setattr(training, "train", lambda config: pytest.fail("training started"))
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.jpg").write_bytes(b"a photo")
    progress = tmp_path / "progress.jsonl"
    args = train_script.get_args_parser().parse_args(
        ["--data", str(SAMPLE), "--out", str(folder), "--progress-file", str(progress)])
    assert train_script.main(args) == 2
    last = json.loads(progress.read_text().splitlines()[-1])
    assert last["event"] == "error" and "is not a model bundle" in last["error"]
    assert (folder / "keep.jpg").read_bytes() == b"a photo"
    with pytest.raises(BundleError, match="is not a model bundle"):   # and the writer refuses it too
        from skin_core.bundle import write_bundle
        write_bundle(folder, model=None, manifest={})


def test_a_dataset_folder_named_relative_to_the_server_reaches_train_py_as_the_server_read_it(models_dir, tmp_path,
                                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)                      # train.py itself starts in the repository
    run_id = jobs.start({"data": "clinic", **TINY}, models_dir)
    settings = json.loads((models_dir / "runs" / run_id / "run.json").read_text())
    jobs.cancel(run_id, models_dir)                  # what it would do with them is train.py's own test
    assert settings["data"] == str(tmp_path / "clinic")
