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

from skin_core import run_config  # noqa: E402 (no Keras)


def get_args_parser() -> argparse.ArgumentParser:
    """train.py's options: one per setting of skin_core.run_config.TrainConfig (its help, checks and choices),
    plus the few that only this command has."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, metavar="RUN_JSON",
                   help="read the settings from this JSON file (TrainConfig's field names, as the Retrain page "
                        "writes for a launched run); options given beside it win")
    run_config.add_arguments(p)
    p.add_argument("--logical-cpus", type=int, default=0,
                   help="split the CPU into this many logical devices (to try --strategy mirrored without GPUs)")
    p.add_argument("--finish-from", default=None, metavar="PREFIX",
                   help="skip fitting: make the bundle from PREFIX.weights.h5, PREFIX.history.csv and PREFIX.json "
                        "written by scripts/train_gpu.py")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """The options, refused with a usage error (exit 2) before anything is read when they do not make a run."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        run_config.from_command_line(args, args.config)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(args) -> int:
    from skin_core import cancellation, data, progress, resume, training
    from skin_core.bundle import BundleError, output_problem
    from skin_core.model import WeightsError

    if args.logical_cpus > 1:
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
    try:
        config = run_config.from_command_line(args, args.config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        log = progress.ProgressLog(config.progress_file)
    except OSError as exc:
        print(f"error: the progress file cannot be written: {exc}", file=sys.stderr)
        return 2
    problem = output_problem(config.out) or resume.folder_problem(config.checkpoint, config.out)   # before any reading
    if problem:
        log.event("error", f"error: {problem}", error=problem)
        return 2

    cancellation.TOO_LATE.clear()             # a run in this process before (a test's, say) may have set it

    def cancel(signum, frame):
        if cancellation.TOO_LATE.is_set():    # the bundle is being written: the run completes
            return
        cancellation.REQUESTED.set()          # for the checks that stop it if this exception is lost
        raise cancellation.TrainingCancelled()

    signal.signal(signal.SIGTERM, cancel)
    try:
        if args.finish_from:
            finish_from(config, args.finish_from)
        else:
            training.train(config)
    except cancellation.TrainingCancelled:
        log.event("cancelled", "Training cancelled; nothing was written to " + config.out + kept(config))
        return 130
    except KeyboardInterrupt:
        log.event("cancelled", "Training interrupted; nothing was written to " + config.out + kept(config))
        return 130
    except Exception as exc:
        if cancellation.REQUESTED.is_set():   # it landed in TensorFlow's C code, which re-raised it as another error
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
    finally:
        cancellation.REQUESTED.clear()    # this run is over (main may run again in the same process)
        cancellation.TOO_LATE.clear()
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
