"""One definition of a training run's settings: train.py's options, a run.json and the Retrain page's launch
all come from skin_core.run_config.TrainConfig."""
import json
from dataclasses import asdict, fields

import pytest

import train
from skin_core import jobs
from skin_core.run_config import TrainConfig, from_command_line
from conftest import SAMPLE


def test_every_command_line_setting_is_an_option_of_train_py_with_the_dataclass_default(tmp_path):
    args = train.parse_args(["--data", str(SAMPLE), "--out", str(tmp_path / "m")])
    config = from_command_line(args)
    assert config == TrainConfig(data=str(SAMPLE), out=str(tmp_path / "m"))
    help_text = train.get_args_parser().format_help()
    for spec in fields(TrainConfig):
        option = spec.metadata["flag"] or "--" + spec.name.replace("_", "-")
        assert (option in help_text) == spec.metadata["command_line"], spec.name


def test_a_run_json_round_trips_and_options_given_beside_it_win(tmp_path):
    written = TrainConfig(data=[str(SAMPLE), str(tmp_path / "other")], out=str(tmp_path / "m"), epochs=3,
                          augment=False, low_detail=0.25, tta="quarter_turns", detail_side=None)
    run_json = tmp_path / "run.json"
    run_json.write_text(written.to_json())
    assert TrainConfig.from_file(run_json) == written
    args = train.parse_args(["--config", str(run_json), "--epochs", "5", "--photometric"])
    assert from_command_line(args, args.config) == TrainConfig(**{**asdict(written), "epochs": 5,
                                                                  "photometric": True})


@pytest.mark.parametrize("settings, message", [
    ({"epochs": 0}, "epochs must be at least 1, not 0"),
    ({"epochs": 2.5}, "epochs must be a whole number"),
    ({"augment": "no"}, "augment must be true or false"),
    ({"balance": "oversample"}, "balance must be one of"),
    ({"dropout": 1.0}, "dropout must be between 0 and 1 [0, 1)"),
    ({"learning_rate": 0.1}, "unknown training setting: learning_rate"),
    ({"test_fraction": 0.6, "val_fraction": 0.5}, "their sum must be below 1"),
    ({"init_member": -1}, "init_member must be at least 0"),
    ({"init_member": 1}, "init_member picks a network of the bundle --init-bundle names"),
])
def test_settings_a_run_cannot_train_with_are_refused_in_words(settings, message, tmp_path):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        TrainConfig.from_settings({"data": str(SAMPLE), "out": str(tmp_path / "m"), **settings})
    run_json = tmp_path / "run.json"           # the same check for a file train.py is given
    run_json.write_text(json.dumps({"data": str(SAMPLE), "out": str(tmp_path / "m"), **settings}))
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--config", str(run_json)])
    assert exit_info.value.code == 2


def test_a_job_hands_train_py_a_run_json_and_refuses_bad_settings_before_starting(models_dir, monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "_spawn", lambda run_dir, job, fd, log_mode: started.append((run_dir, job)))
    monkeypatch.setattr(jobs, "running_job", lambda root=None: None)
    with pytest.raises(jobs.JobError, match="These settings cannot train: epochs must be at least 1"):
        jobs.start({"data": str(SAMPLE), "epochs": 0}, models_dir)
    with pytest.raises(jobs.JobError, match="names its own out"):
        jobs.start({"data": str(SAMPLE), "out": "/tmp/elsewhere"}, models_dir)
    assert not started and not list((models_dir / "runs").glob("run-*"))
    run_id = jobs.start({"data": str(SAMPLE), "epochs": 2, "augment": False}, models_dir)
    (run_dir, job), = started
    assert job["command"][-2:] == ["--config", str(run_dir / jobs.RUN_CONFIG)]
    config = TrainConfig.from_file(run_dir / jobs.RUN_CONFIG)
    assert (config.epochs, config.augment, config.name) == (2, False, run_id)
    assert config.out == str(run_dir / "bundle") and config.checkpoint == str(run_dir / jobs.CHECKPOINT)
