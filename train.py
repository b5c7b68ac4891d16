"""Train MobileNet V1 on a skin-lesion dataset and write a model bundle.

    python train.py --data path/to/HAM10000 --out models/my_model

See models/default/MODEL_CARD.md for the command that reproduces the default model.
"""
import argparse
import warnings
import signal
import sys
from pathlib import Path

warnings.filterwarnings("ignore", message=".*shuffle=True.*")

from skin_core.options import BALANCE_CHOICES, MIX_CHOICES, STRATEGY_CHOICES, TTA_CHOICES  # noqa: E402 (no Keras)


def whole_number(least: int):
    """An argparse type for integers of at least `least` (an epoch count of 0 or a batch of 0 would fail
    only after the whole dataset had been read)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
        return value
    return parse


def fraction(*, zero: bool = False, one: bool = False):
    """An argparse type for a number between 0 and 1, with either end allowed only where named (a split
    share of 0 or 1, or a dropout of 1, would fail or train nothing only after the dataset had been read)."""
    def parse(text: str) -> float:
        value = float(text)
        if not ((0 <= value) if zero else (0 < value)) or not ((value <= 1) if one else (value < 1)):
            ends = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
            raise argparse.ArgumentTypeError(f"must be between 0 and 1 {ends}, not {value}")
        return value
    return parse


share = fraction()


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, action="append",
                   help="dataset folder (HAM10000 layout or one folder per class); repeat it to train on several "
                        "datasets as one (each split by lesion on its own, each reported on its own)")
    p.add_argument("--out", required=True, help="bundle folder to write, e.g. models/my_model")
    p.add_argument("--epochs", type=whole_number(1), default=30, help="total epochs, head phase included")
    p.add_argument("--head-epochs", type=whole_number(0), default=2, help="epochs training only the new head")
    p.add_argument("--img-size", type=whole_number(32), default=224, help="square input size in pixels")
    p.add_argument("--alpha", type=float, default=1.0, choices=(0.25, 0.5, 0.75, 1.0),
                   help="MobileNet width multiplier (the widths Keras has ImageNet weights for)")
    p.add_argument("--weights", default="imagenet", help="'imagenet', a Keras .h5 weights file, or 'none'")
    p.add_argument("--init-bundle", default=None, help="start from this bundle's weights instead")
    p.add_argument("--batch-size", type=whole_number(1), default=32, help="per-replica batch size")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate while fine-tuning")
    p.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the head phase")
    p.add_argument("--fine-tune-fraction", type=fraction(zero=True, one=True), default=1.0,
                   help="share of the body unfrozen in phase 2")
    p.add_argument("--seed", type=int, default=42,
                   help="randomness of the split and of training (with --split-from: of training only)")
    p.add_argument("--split-from", default=None, metavar="BUNDLE",
                   help="reuse this bundle's split.csv (same validation and test lesions), e.g. to train "
                        "another seed for comparison or weight averaging")
    p.add_argument("--balance", default=BALANCE_CHOICES[0], choices=BALANCE_CHOICES,
                   help="class balancing: loss weights, their square root, balanced sampling, a logit-adjusted "
                        "loss (rare classes must win by a margin), or none")
    p.add_argument("--mix", default=MIX_CHOICES[0], choices=MIX_CHOICES,
                   help="mix pairs of training images and their labels (MixUp or CutMix)")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn augmentation off")
    p.add_argument("--photometric", action="store_true",
                   help="widen brightness/contrast changes to ±20%% and also vary colour saturation and sharpness "
                        "(differences between cameras)")
    p.add_argument("--colour-constancy", action="store_true",
                   help="bring each photo's white balance and exposure to a fixed reference inside the model")
    p.add_argument("--compression", action="store_true",
                   help="re-save half the training photos as JPEG at a random quality (30-95), as phone and web "
                        "copies are")
    p.add_argument("--low-detail", type=fraction(zero=True), default=0.0, metavar="SHARE",
                   help="bring this share of the training photos down to --low-detail-side pixels of detail (then "
                        "back up to the input size), so sharp and low-resolution sources look alike to the model")
    p.add_argument("--low-detail-side", type=whole_number(8), default=84,
                   help="the detail of that degradation in pixels (the BCN20000/MSK copies are 84 px)")
    p.add_argument("--patients", action="store_true",
                   help="also learn from the patient's age, sex and body site (the age, sex and localization "
                        "columns of a HAM10000 metadata CSV); the model still answers a photo without them")
    p.add_argument("--patient-dropout", type=fraction(zero=True), default=0.25,
                   help="share of training photos whose age, sex or body site is hidden, each field on its own, "
                        "so that the model learns to answer without it")
    p.add_argument("--label-smoothing", type=fraction(zero=True), default=0.1)
    p.add_argument("--dropout", type=fraction(zero=True), default=0.3)
    p.add_argument("--patience", type=whole_number(1), default=8, help="early-stopping patience in epochs")
    p.add_argument("--patience-from", type=int, default=0, metavar="EPOCH",
                   help="early stopping ignores the first EPOCH epochs, e.g. half the schedule: a whole-network run "
                        "from ImageNet weights peaks noisily at the top of its learning rate and improves later")
    p.add_argument("--test-fraction", type=share, default=0.2)
    p.add_argument("--val-fraction", type=share, default=0.15)
    p.add_argument("--detail-side", type=int, default=-1,
                   help="cap the detail of inputs to this many pixels (-1: the dataset's own resolution, 0: none)")
    p.add_argument("--mel-sensitivity", type=share, default=0.85,
                   help="melanoma sensitivity the decision threshold must reach on validation")
    p.add_argument("--tta", default=TTA_CHOICES[0], choices=TTA_CHOICES,
                   help="test-time views averaged per prediction: auto keeps the half turn (2 views) if it "
                        "scores better on validation, and the four quarter turns only if clearly better still")
    p.add_argument("--skip-bad", action="store_true", help="leave out missing or unreadable images instead of stopping")
    p.add_argument("--progress-file", default=None, help="also write progress as JSON lines to this file")
    p.add_argument("--checkpoint", default=None, metavar="FOLDER",
                   help="save the run's state in FOLDER after every epoch; the same command started again continues "
                        "from the last finished epoch (FOLDER is removed once the bundle is written)")
    p.add_argument("--strategy", default=STRATEGY_CHOICES[0], choices=STRATEGY_CHOICES,
                   help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    p.add_argument("--logical-cpus", type=int, default=0,
                   help="split the CPU into this many logical devices (to try --strategy mirrored without GPUs)")
    p.add_argument("--name", default=None, help="display name of the model (default: the --out folder name)")
    p.add_argument("--finish-from", default=None, metavar="PREFIX",
                   help="skip fitting: make the bundle from PREFIX.weights.h5, PREFIX.history.csv and PREFIX.json "
                        "written by scripts/train_gpu.py")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.test_fraction + args.val_fraction >= 1:
        parser.error("--test-fraction and --val-fraction must leave images to train on (their sum must be below 1)")
    return args


def main(args) -> int:
    from skin_core import data, progress, resume, training
    from skin_core.bundle import BundleError, output_problem
    from skin_core.model import WeightsError

    if args.logical_cpus > 1:
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
    settings = {k: v for k, v in vars(args).items() if k not in ("finish_from", "logical_cpus")}
    if len(settings["data"]) == 1:        # one dataset: recorded as a folder, as before
        settings["data"] = settings["data"][0]
    config = training.TrainConfig(**settings)
    if config.detail_side == 0:
        config.detail_side = None
    try:
        log = progress.ProgressLog(config.progress_file)
    except OSError as exc:
        print(f"error: the progress file cannot be written: {exc}", file=sys.stderr)
        return 2
    problem = output_problem(config.out) or resume.folder_problem(config.checkpoint, config.out)   # before any reading
    if problem:
        log.event("error", f"error: {problem}", error=problem)
        return 2

    cancel_requested = []

    def cancel(signum, frame):
        cancel_requested.append(signum)
        raise training.TrainingCancelled()

    signal.signal(signal.SIGTERM, cancel)
    try:
        if args.finish_from:
            finish_from(config, args.finish_from)
        else:
            training.train(config)
    except training.TrainingCancelled:
        log.event("cancelled", "Training cancelled; nothing was written to " + config.out + kept(config))
        return 130
    except KeyboardInterrupt:
        log.event("cancelled", "Training interrupted; nothing was written to " + config.out + kept(config))
        return 130
    except Exception as exc:
        if cancel_requested:       # the cancel landed inside TensorFlow's C code, which re-raised it as another error
            log.event("cancelled", "Training cancelled; nothing was written to " + config.out + kept(config))
            return 130
        if isinstance(exc, (data.DatasetError, WeightsError, BundleError, ValueError)):
            log.event("error", f"error: {exc}", error=str(exc))
            return 2
        if isinstance(exc, OSError):   # a file named on the command line that cannot be read or written
            message = f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
            log.event("error", f"error: {message}", error=message)
            return 2
        log.event("error", f"error: training failed: {type(exc).__name__}: {exc}{kept(config)}",
                  error=f"{type(exc).__name__}: {exc}")
        raise
    return 0


def kept(config) -> str:
    """What a stopped run leaves to continue from, for the message that it stopped."""
    from skin_core import resume
    if config.checkpoint and (Path(config.checkpoint) / resume.STATE_FILE).is_file():
        return f"; the same command continues from the last finished epoch saved in {config.checkpoint}"
    return ""


def finish_from(config, prefix: str):
    """Bundle weights fitted by scripts/train_gpu.py, recording the settings that run used."""
    import dataclasses
    import json
    from skin_core import training
    info = json.loads(open(prefix + ".json").read())
    if "settings" not in info:
        raise ValueError(f"{prefix}.json has no 'settings': it was not written by scripts/train_gpu.py")
    known = {f.name for f in dataclasses.fields(config)}
    config = dataclasses.replace(config, **{k: v for k, v in info["settings"].items() if k in known})
    fit_info = {k: v for k, v in info.items() if k not in ("settings", "name", "seconds")}
    fit_info.update(run=info.get("name"), fit_seconds=info.get("seconds"))
    return training.finish_from_weights(config, prefix + ".weights.h5", prefix + ".history.csv", fit_info)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
