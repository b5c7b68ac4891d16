"""The settings of one training run: the one place that names each setting, its default, its check and its
help text. train.py's options, the Retrain page's help texts and the run.json a launched job hands to train.py
are all derived from `TrainConfig`, so a setting added here appears everywhere and cannot drift between them.

No Keras or TensorFlow import: train.py builds its parser from this module before loading either.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Callable

from .jsonfiles import read_json_object
from .options import BALANCE_CHOICES, MIX_CHOICES, STRATEGY_CHOICES, TTA_CHOICES


def at_least(least: int) -> Callable[[int], int]:
    """A whole number of at least `least` (an epoch count of 0 or a batch of 0 would fail only after the
    whole dataset had been read)."""
    def check(value):              # a whole number already (the field's type is checked first)
        if value < least:
            raise ValueError(f"must be at least {least}, not {value}")
        return int(value)
    return check


def between_0_and_1(*, zero: bool = False, one: bool = False) -> Callable[[float], float]:
    """A number between 0 and 1, either end allowed only where named (a split share of 0 or 1, or a dropout
    of 1, would fail or train nothing only after the dataset had been read)."""
    def check(value):
        value = float(value)
        if not ((0 <= value) if zero else (0 < value)) or not ((value <= 1) if one else (value < 1)):
            ends = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
            raise ValueError(f"must be between 0 and 1 {ends}, not {value}")
        return value
    return check


def setting(default=MISSING, help: str | None = None, *, check=None, choices=None, flag: str | None = None,
            metavar: str | None = None, command_line: bool = True):
    """A TrainConfig field with what train.py's option needs: its help, a check of its value, its choices, the
    option's name when it is not the field's (--no-augment), and whether it is an option at all."""
    return field(default=default, metadata={"help": help, "check": check, "choices": choices, "flag": flag,
                                            "metavar": metavar, "command_line": command_line})


share = between_0_and_1()


@dataclass
class TrainConfig:
    data: str | list[str] = setting(
        help="dataset folder (HAM10000 layout, an ISIC download as it comes, or one folder per class); repeat it "
             "to train on several datasets as one (each split by lesion on its own, each reported on its own)")
    out: str = setting(help="bundle folder to write, e.g. models/my_model")
    epochs: int = setting(30, "total epochs, head phase included", check=at_least(1))
    head_epochs: int = setting(2, "epochs training only the new head", check=at_least(0))
    img_size: int = setting(224, "square input size in pixels", check=at_least(32))
    alpha: float = setting(1.0, "MobileNet width multiplier (the widths Keras has ImageNet weights for)",
                           choices=(0.25, 0.5, 0.75, 1.0))
    weights: str | None = setting("imagenet", "'imagenet', a Keras .h5 weights file, or 'none'")
    init_bundle: str | None = setting(None, "start from this bundle's weights instead")
    init_member: int = setting(
        0, "with --init-bundle a bundle of several networks side by side (an ensemble, such as the default pair): "
           "start from its Nth network (1, 2, ...); 0: the bundle holds one network", check=at_least(0), metavar="N")
    split_from: str | None = setting(
        None, "reuse this bundle's split.csv (same validation and test lesions), e.g. to train another seed for "
              "comparison or weight averaging; the seed then drives training only", metavar="BUNDLE")
    batch_size: int = setting(32, "per-replica batch size", check=at_least(1))
    lr: float = setting(3e-4, "peak learning rate while fine-tuning")
    head_lr: float = setting(1e-3, "learning rate of the head phase")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    fine_tune_fraction: float = setting(1.0, "share of the body unfrozen in phase 2",
                                        check=between_0_and_1(zero=True, one=True))
    seed: int = setting(42, "randomness of the split and of training (of training only when a bundle's split is reused)")
    balance: str = setting(
        BALANCE_CHOICES[0], "class balancing: loss weights, their square root, balanced sampling, a logit-adjusted "
                            "loss (rare classes must win by a margin), or none", choices=BALANCE_CHOICES)
    augment: bool = setting(True, "turn augmentation (rotation, flips, zoom, light) off", flag="--no-augment")
    photometric: bool = setting(
        False, "widen brightness/contrast changes to ±20% and also vary colour saturation and sharpness "
               "(differences between cameras)")
    colour_constancy: bool = setting(
        False, "bring each photo's white balance and exposure to a fixed reference inside the model")
    compression: bool = setting(
        False, "re-save half the training photos as JPEG at a random quality (30-95), as phone and web copies are")
    low_detail: float = setting(
        0.0, "bring this share of the training photos down to --low-detail-side pixels of detail (then back up "
             "to the input size), so sharp and low-resolution sources look alike to the model",
        check=between_0_and_1(zero=True), metavar="SHARE")
    low_detail_side: int = setting(84, "the detail of that degradation in pixels (the BCN20000/MSK copies are 84 px)",
                                   check=at_least(8))
    mix: str = setting(MIX_CHOICES[0], "mix pairs of training images and their labels (MixUp or CutMix)",
                       choices=MIX_CHOICES)
    label_smoothing: float = setting(0.1, "label smoothing of the loss", check=between_0_and_1(zero=True))
    dropout: float = setting(0.3, "dropout before the classifier", check=between_0_and_1(zero=True))
    patience: int = setting(8, "early-stopping patience in epochs", check=at_least(1))
    patience_from: int = setting(
        0, "early stopping ignores the first EPOCH epochs, e.g. half the schedule: a whole-network run from "
           "ImageNet weights peaks noisily at the top of its learning rate and improves later",
        check=at_least(0), metavar="EPOCH")
    copy_groups: bool = setting(
        True, "split by lesion_id alone, as splits were made before copies were grouped (by default a photo filed "
              "again under another lesion id moves to its original's side of a new split)",
        flag="--no-copy-groups")
    test_fraction: float = setting(0.2, "share of lesions held out for the test split", check=share)
    val_fraction: float = setting(0.15, "share of lesions held out for validation", check=share)
    detail_side: int | None = setting(
        -1, "cap the detail of inputs to this many pixels (-1: the dataset's own resolution, 0: none)")
    mel_sensitivity: float = setting(0.85, "melanoma sensitivity the decision threshold must reach on validation",
                                     check=share)
    tta: str = setting(
        TTA_CHOICES[0], "test-time views averaged per prediction: auto keeps the half turn (2 views) if it scores "
                        "better on validation, and the four quarter turns only if clearly better still",
        choices=TTA_CHOICES)
    skip_bad: bool = setting(False, "leave out missing or unreadable images instead of stopping")
    skip_other_labels: bool = setting(
        False, "leave out images labelled beyond the seven classes (an ISIC download's SCC or UNK) and an ISIC "
               "export's photos that are not dermoscopy, instead of stopping; the manifest lists them")
    progress_file: str | None = setting(None, "also write progress as JSON lines to this file")
    name: str | None = setting(None, "display name of the model (default: the --out folder name)")
    strategy: str = setting(STRATEGY_CHOICES[0], "tf.distribute strategy (multiworker reads TF_CONFIG)",
                            choices=STRATEGY_CHOICES)
    workers: int = setting(4, "threads decoding images", check=at_least(1), command_line=False)
    checkpoint: str | None = setting(
        None, "save the run's state in FOLDER after every epoch; the same command started again continues from "
              "the last finished epoch (FOLDER is removed once the bundle is written)", metavar="FOLDER")
    patients: bool = setting(
        False, "also learn from the patient's age, sex and body site (the age, sex and localization columns of a "
               "HAM10000 metadata CSV); the model still answers a photo without them")
    patient_dropout: float = setting(
        0.25, "share of training photos whose age, sex or body site is hidden, each field on its own, so that the "
              "model learns to answer without it", check=between_0_and_1(zero=True))
    patient_dropout_all: float = setting(
        0.0, "share of training photos with every detail hidden at once (on top of --patient-dropout), so that "
             "the network learns to answer the photo alone, as photos sent without details are answered",
        check=between_0_and_1(zero=True))

    def __post_init__(self):
        if self.detail_side == 0:        # 0 on the command line: no cap
            self.detail_side = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_settings(cls, settings: dict) -> "TrainConfig":
        """A config from settings by field name (a run.json, the Retrain form's), each value checked as the
        command line checks it; a ValueError names the first setting that is unknown or out of range."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(f"unknown training setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        missing = [name for name in ("data", "out") if not settings.get(name)]
        if missing:
            raise ValueError(f"no {' or '.join(missing)} given")
        checked = {name: _checked(known[name], value) for name, value in settings.items()}
        config = cls(**checked)
        if config.init_member and not config.init_bundle:
            raise ValueError("init_member picks a network of the bundle --init-bundle names; name that bundle")
        if config.test_fraction + config.val_fraction >= 1:
            raise ValueError("test_fraction and val_fraction must leave images to train on (their sum must be below 1)")
        return config

    @classmethod
    def from_file(cls, path) -> "TrainConfig":
        """The config a run.json holds (written by `to_json`, e.g. by skin_core.jobs for a launched run)."""
        return cls.from_settings(read_settings(path))


def read_settings(path) -> dict:
    """The settings object of a run.json, or a ValueError saying why the file is not one."""
    try:
        return read_json_object(path)
    except ValueError as exc:
        raise ValueError(f"{path} is not a training config ({exc})") from None


def _kind(spec) -> type:
    """The Python type of a setting's values (detail_side's default -1 is an int; None-default paths are text)."""
    return type(spec.default) if spec.default not in (MISSING, None) else str


def _checked(spec, value):
    """`value` after the field's type, check and choices; None passes where the field's type allows it."""
    if value is None and "None" in str(spec.type):
        return None
    meta, kind = spec.metadata, _kind(spec)
    try:
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
        if kind is int and (isinstance(value, bool) or float(value) != int(value)):
            raise ValueError(f"must be a whole number, not {value!r}")
        if kind in (int, float):
            value = kind(value)
        if meta["check"] is not None:
            value = meta["check"](value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{spec.name} {exc}") from None
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ValueError(f"{spec.name} must be one of {', '.join(map(str, meta['choices']))}, not {value!r}")
    return value


def _field(name: str):
    (spec,) = [f for f in fields(TrainConfig) if f.name == name]
    return spec


def help_of(name: str) -> str:
    """A setting's help text, for the Retrain page's widgets (the same words as train.py --help)."""
    text = _field(name).metadata["help"] or ""
    return text[:1].upper() + text[1:]


def default_of(name: str):
    """A setting's default value."""
    return _field(name).default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per command-line setting, from the field's metadata. Options have no argparse default (what
    is not given is left out of the namespace), so a --config file's values and then the dataclass's defaults
    fill the rest, in that order."""
    for spec in fields(TrainConfig):
        meta = spec.metadata
        if not meta["command_line"]:
            continue
        flag = meta["flag"] or "--" + spec.name.replace("_", "-")
        shown = "" if isinstance(spec.default, bool) or spec.default in (MISSING, None) else \
            f" (default: {spec.default})"
        options = {"dest": spec.name, "default": argparse.SUPPRESS,
                   "help": (meta["help"] or "").replace("%", "%%") + shown}
        if spec.name == "data":
            options.update(action="append")
        elif isinstance(spec.default, bool):
            options.update(action="store_false" if spec.default else "store_true")
        else:
            options.update(type=_parser_of(spec), metavar=meta["metavar"] or spec.name.upper())
            if meta["choices"] is not None:
                options.update(choices=meta["choices"], metavar=None)
        if meta["metavar"] and "metavar" not in options:
            options["metavar"] = meta["metavar"]
        parser.add_argument(flag, **options)


def _parser_of(spec):
    """Command-line text into the field's type, then its check (an argparse error names the option)."""
    kind = _kind(spec)

    def parse(text: str):
        try:
            value = kind(text)
            return spec.metadata["check"](value) if spec.metadata["check"] else value
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = kind.__name__       # argparse names the type in "invalid int value"
    return parse


def from_command_line(namespace: argparse.Namespace, config_file: str | None = None) -> TrainConfig:
    """The run's config: the dataclass's defaults, then a --config file's settings, then the options given."""
    settings = read_settings(config_file) if config_file else {}
    given = {f.name: getattr(namespace, f.name) for f in fields(TrainConfig) if hasattr(namespace, f.name)}
    if isinstance(given.get("data"), list) and len(given["data"]) == 1:   # one dataset: recorded as a folder
        given["data"] = given["data"][0]
    return TrainConfig.from_settings({**settings, **given})
