"""What a training run launched from the Retrain page will be: the settings train.py gets, decided from
the form and the active model, with the reason a run must not start decided before it starts.

The policy lives here, not in the page, so it is tested as code: a run that reuses a model's split must
be on a dataset that split covers; a run that starts from the active model's weights keeps that model's
held-out lesions out of its training (its split of the collections it learnt from, any others split afresh,
or else a fresh split, only if it tests on none of the images the model was fitted or tuned on) and takes
its input size and width. An active model of several networks side by side (the default pair) is continued
one network at a time.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import patients
from .bundle import SPLIT_FILE, BundleError, read_manifest
from .run_config import default_of
from .splits import split_problem, split_when_starting_from

START_FROM = {"imagenet": "ImageNet weights", "active": "The active model", "none": "No weights (random)"}
MEMBER = "member-"            # "member-2": the active ensemble's second network


def start_choices(active: Path) -> dict[str, str]:
    """The starting points the form offers, by key: for an active ensemble each of its networks instead of the
    active model as a whole, which train.py cannot continue."""
    try:
        members = read_manifest(active)["training"].get("ensemble_of") or []
    except BundleError:
        members = []                 # plan_run names the problem if the active model is chosen
    if not members:
        return dict(START_FROM)
    networks = {f"{MEMBER}{i}": f"Network {i} of the active model ({name})" for i, name in enumerate(members, 1)}
    return {"imagenet": START_FROM["imagenet"], **networks, "none": START_FROM["none"]}


class LaunchError(ValueError):
    """Why the run must not start, in words for the form."""


def plan_run(settings: dict, table: pd.DataFrame, *, start_from: str, same_lesions: bool,
             active: Path) -> tuple[dict, list[str]]:
    """train.py's settings (option names without dashes) for the run the form describes, and what the
    user should be told about settings that were decided for them. `table` is the dataset's."""
    member = _network_number(start_from)
    if start_from not in START_FROM and not member:
        raise LaunchError(f"Unknown starting point {start_from!r}; expected one of {', '.join(START_FROM)} or "
                          f"{MEMBER}N.")
    config, notes = dict(settings), []
    # early stopping watches only the second half: a run's first epochs at the top of its learning rate are noisy
    config.setdefault("patience_from", int(config.get("epochs", 0)) // 2)
    active = Path(active)
    if config.get("patients"):
        _check_patient_run(config, table)
    if same_lesions:
        problem = split_problem(table, active / SPLIT_FILE)
        if problem:
            raise LaunchError(problem)
        config["split_from"] = str(active)
    if start_from != "active" and not member:
        config["weights"] = "imagenet" if start_from == "imagenet" else "none"
        return config, notes
    try:
        manifest = read_manifest(active)
    except BundleError as exc:
        raise LaunchError(f"The active model cannot be started from: {exc}") from None
    members = manifest["training"].get("ensemble_of") or []
    if members and not member:  # train.py would refuse it too, but only once the job had started
        raise LaunchError(f"The active model holds {len(members)} networks side by side (an ensemble of "
                          f"{' and '.join(members)}): choose one of its networks to start from.")
    if member and not 1 <= member <= len(members):
        held = f"{len(members)} networks" if members else "one network"
        raise LaunchError(f"The active model holds {held}; it has no network {member} to start from.")
    if "split_from" not in config:          # keep the active model's held-out lesions out of training
        reuse, problem = split_when_starting_from(
            table, active / SPLIT_FILE, config.get("seed", default_of("seed")),
            test_fraction=config.get("test_fraction", default_of("test_fraction")),
            val_fraction=config.get("val_fraction", default_of("val_fraction")))
        if problem:
            raise LaunchError(problem + " Start from the ImageNet weights instead, or use a dataset without "
                                        "those images.")
        if reuse:
            config["split_from"] = str(active)
            notes.append("The dataset is covered by the active model's split, so the run keeps it: its "
                         "validation and test lesions stay unseen." if split_problem(table, active / SPLIT_FILE)
                         is None else
                         "The run keeps the active model's split of the collections it was trained on (their "
                         "validation and test lesions stay unseen) and splits the others by lesion afresh.")
    shape = {"img_size": manifest["input_size"], "alpha": manifest["alpha"]}
    if any(config.get(key) not in (None, value) for key, value in shape.items()):
        notes.append(f"Input size {shape['img_size']} px and width {shape['alpha']} are the active model's: "
                     "its weights are continued at their own shape.")
    config.update(init_bundle=str(active), **shape)
    if member:
        config["init_member"] = member
        exact = bool(manifest["training"].get("member_biases"))    # recorded by scripts/ensemble.py since run 59
        notes.append(f"The run continues network {member} of the active model ({members[member - 1]})" +
                     (", as it was when the ensemble was joined." if exact else
                      "; this ensemble keeps only the mean of its networks' output biases, so that mean is its "
                      "starting bias."))
    return config, notes


def _network_number(start_from: str) -> int:
    """N for a start from the active ensemble's Nth network ("member-N"), else 0."""
    number = start_from[len(MEMBER):] if start_from.startswith(MEMBER) else ""
    return int(number) if number.isdigit() else 0


def _check_patient_run(config: dict, table: pd.DataFrame) -> None:
    """A run that learns from age, sex and body site needs a dataset that records them and no label mixing."""
    if config.get("mix", "none") != "none":
        raise LaunchError(patients.MIXING_REFUSAL)
    try:
        patients.read_known(config["data"], table["image_id"])
    except patients.PatientError as exc:
        raise LaunchError(str(exc)) from None
