"""A training run stopped after an epoch continues from there: weights, optimizer, best epoch, early stopping
and history. (Continuing at the boundary between the head and fine-tuning phases is tested through the
Retrain jobs.)"""
import dataclasses
import json

import keras
import numpy as np
import pytest

from skin_core import resume
from skin_core.progress import ProgressLog
from skin_core.training import TrainConfig, fit, prepare
from conftest import SAMPLE


def events(path, kind):
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == kind]


def test_a_stopped_run_continues_from_its_last_finished_epoch(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoint"
    config = TrainConfig(data=str(SAMPLE), out=str(tmp_path / "unused"), epochs=3, head_epochs=0, img_size=32,
                         alpha=0.25, weights=None, batch_size=16, test_fraction=0.2, val_fraction=0.2, workers=2,
                         checkpoint=str(folder))
    prep = prepare(config, ProgressLog(None))
    save_epoch = resume.EpochRecorder.on_epoch_end

    def stop_after_the_second_epoch(self, epoch, logs=None):
        save_epoch(self, epoch, logs)
        if epoch + 1 == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(resume.EpochRecorder, "on_epoch_end", stop_after_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(config, prep, ProgressLog(None))
    monkeypatch.undo()
    saved = json.loads((folder / resume.STATE_FILE).read_text())
    assert saved["epoch"] == 2 and [row["phase"] for row in saved["history"]] == ["fine-tune"] * 2
    assert set(saved["early_stopping"]) == {"wait", "best"}
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-002", resume.MARKER_FILE, resume.STATE_FILE]

    other = TrainConfig(**{**config.__dict__, "head_lr": 3e-3, "progress_file": "elsewhere.jsonl"})
    with pytest.raises(resume.CheckpointError, match=r"other settings \(head_lr 0.001 then, 0.003 now\)"):
        fit(other, prep, ProgressLog(None))
    # the same images and split, but a label corrected since (the fingerprint covers ids, labels and bytes)
    relabelled = dataclasses.replace(prep, arrays=dataclasses.replace(prep.arrays, fingerprint="0" * 64))
    with pytest.raises(resume.CheckpointError, match="other images or labels than this dataset now holds"):
        fit(config, relabelled, ProgressLog(None))

    progress = tmp_path / "progress.jsonl"
    model, history, info = fit(config, prep, ProgressLog(str(progress)))
    assert [e["epoch"] for e in events(progress, "resume")] == [2]
    assert [e["epoch"] for e in events(progress, "epoch")] == [3]          # only the epoch left was trained
    steps = events(progress, "batch")[-1]["batches"]
    assert int(model.optimizer.iterations.numpy()) == 3 * steps            # the optimizer went on, not anew
    assert list(history.index) == [1, 2, 3] and list(history["phase"]) == ["fine-tune"] * 3
    np.testing.assert_allclose(history.loc[[1, 2], "val_loss"], [row["val_loss"] for row in saved["history"]])
    assert info["resumed_at_epochs"] == [2]
    assert info["best_epoch"] == int(history["val_macro_f1"].idxmax())

    # fitting finished: started again, nothing is trained and the same best model comes back
    again = tmp_path / "again.jsonl"
    model_again, history_again, _ = fit(config, prep, ProgressLog(str(again)))
    assert [e["epoch"] for e in events(again, "resume")] == [3] and events(again, "epoch") == []
    for mine, theirs in zip(model.get_weights(), model_again.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    assert history_again.equals(history)


def test_early_stopping_goes_on_counting_after_a_restart():
    """One epoch without progress was counted before the restart; with patience 2 the next one stops."""
    stopping = resume.ResumableEarlyStopping("val_macro_f1", mode="max", patience=2, resume={"wait": 1, "best": 0.5})
    model = keras.Sequential([keras.layers.Input((1,)), keras.layers.Dense(1)])
    stopping.set_model(model)
    stopping.on_train_begin()
    stopping.on_epoch_end(5, {"val_macro_f1": 0.4})
    assert model.stop_training


def test_a_checkpoint_folder_must_be_new_empty_or_a_checkpoint(tmp_path):
    assert resume.folder_problem(tmp_path / "new") is None and (tmp_path / "new").is_dir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.docx").write_text("years of work")
    assert "holds other files" in resume.folder_problem(tmp_path / "notes")
    (tmp_path / "snapshots" / "epoch-005").mkdir(parents=True)          # another tool's names, not ours
    assert "holds other files" in resume.folder_problem(tmp_path / "snapshots")
    (tmp_path / "file").write_text("x")
    assert "is a file" in resume.folder_problem(tmp_path / "file")
    assert "inside each other" in resume.folder_problem(tmp_path / "bundle" / "checkpoint", out=tmp_path / "bundle")
    assert "inside each other" in resume.folder_problem(tmp_path / "runs", out=tmp_path / "runs" / "bundle")
    ours = tmp_path / "ours"                       # killed while replacing its state file on the first save
    ours.mkdir()
    for name in (resume.MARKER_FILE, ".state.json.0a1b2c3d.tmp", "epoch-001.partial"):
        (ours / name).touch()
    assert resume.folder_problem(ours) is None


def test_discarding_a_checkpoint_leaves_files_it_did_not_write(tmp_path):
    (tmp_path / "epoch-004").mkdir()
    (tmp_path / "epoch-004" / resume.WEIGHTS_FILE).write_bytes(b"\0")
    for name in (resume.STATE_FILE, resume.MARKER_FILE):
        (tmp_path / name).write_text("{}")
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / "epoch-5").mkdir()
    resume.discard(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-5", "keep.txt"]


def test_a_damaged_checkpoint_is_named_not_raised(tmp_path):
    folder = tmp_path / "checkpoint"
    (folder / "epoch-002").mkdir(parents=True)
    (folder / "epoch-002" / resume.WEIGHTS_FILE).write_bytes(b"half a file")
    (folder / resume.MARKER_FILE).touch()
    record = {"settings": {"lr": 1e-3}, "split_digest": "abc", "saved": "epoch-002",
              **resume.FitState(epoch=2).__dict__}
    (folder / resume.STATE_FILE).write_text(json.dumps(record))
    checkpoint = resume.Checkpoint(folder, {"lr": 1e-3}, "abc")
    assert checkpoint.load().epoch == 2
    with pytest.raises(resume.CheckpointError, match="weights.npz cannot be read"):
        checkpoint.restore_weights(keras.Sequential([keras.layers.Input((1,)), keras.layers.Dense(1)]))
    (folder / resume.STATE_FILE).write_text("{not json")
    with pytest.raises(resume.CheckpointError, match="cannot be read"):
        checkpoint.load()
    with pytest.raises(resume.CheckpointError, match="other images"):
        (folder / resume.STATE_FILE).write_text(json.dumps(record))
        resume.Checkpoint(folder, {"lr": 1e-3}, "another split").load()
    # a checkpoint of a version with other settings (one added or retired since) is not continued
    with pytest.raises(resume.CheckpointError, match="written by another version of this code .settings seed differ"):
        resume.Checkpoint(folder, {"lr": 1e-3, "seed": 42}, "abc").load()
