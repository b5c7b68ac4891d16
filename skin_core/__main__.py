"""Command line: predict, evaluate and export with a model bundle.

    python -m skin_core predict  --model models/default photo.jpg [more.jpg ...] [--gradcam OUTDIR] [--one-lesion]
                                 [--age YEARS] [--sex male|female] [--site "lower extremity"]
    python -m skin_core evaluate --model models/default --data DATASET --json report.json
    python -m skin_core export   --model models/default --format tflite|savedmodel --out PATH
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skin_core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="class probabilities of images, as JSON lines")
    predict.add_argument("--model", default="models/default", help="bundle folder")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument("--gradcam", metavar="OUTDIR", help="also write a Grad-CAM overlay PNG per image here")
    predict.add_argument("--one-lesion", action="store_true",
                         help="the images are photos of one lesion: after each photo's line, print one more with "
                              "their combined answer (the mean of their logits, calibrated as one photo's)")
    predict.add_argument("--age", help="the patient's age in years (for a model trained with --patients)")
    predict.add_argument("--sex", help="the patient's sex: male or female")
    predict.add_argument("--site", help="the lesion's body site, one of HAM10000's (e.g. back, face, "
                                        "'lower extremity')")
    evaluate = commands.add_parser("evaluate", help="evaluate a bundle on a labelled dataset")
    evaluate.add_argument("--model", default="models/default")
    evaluate.add_argument("--data", required=True, help="dataset folder: HAM10000 layout, an ISIC download as it "
                                                         "comes, or one sub-folder per class")
    evaluate.add_argument("--json", help="write the full report here")
    evaluate.add_argument("--skip-bad", action="store_true", help="leave out missing or unreadable images")
    evaluate.add_argument("--skip-other-labels", action="store_true",
                          help="leave out images labelled with a class the model does not know (e.g. ISIC's SCC), "
                               "and an ISIC export's photos that are not dermoscopy (clinical, total-body tiles)")
    export = commands.add_parser("export", help="export a bundle for TFLite or TF Serving")
    export.add_argument("--model", default="models/default")
    export.add_argument("--format", choices=["tflite", "savedmodel"], required=True)
    export.add_argument("--quantize", choices=["none", "float16", "int8"], default="none")
    export.add_argument("--out", required=True)
    return parser


def _quiet_native_logs() -> None:
    """Point the stderr file descriptor, where TensorFlow's C++ start-up messages go whatever
    TF_CPP_MIN_LOG_LEVEL says, at /dev/null, and Python's sys.stderr at the real one: the user sees
    this tool's one-line errors and Python's own output only. SKIN_CORE_NATIVE_LOGS=1 keeps them."""
    if os.environ.get("SKIN_CORE_NATIVE_LOGS"):
        return
    try:
        sys.stderr.flush()
        kept = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(kept, "w", buffering=1)
    except OSError:
        pass


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def cmd_predict(args) -> int:
    from . import explain, images, lesion, patients, report
    from .predict import Predictor
    try:
        patient = patients.check(args.age, args.sex, args.site)   # before the model loads
    except patients.PatientError as exc:
        return _fail(str(exc))
    if args.one_lesion and len(args.images) < lesion.SMALLEST:
        return _fail(f"--one-lesion combines at least {lesion.SMALLEST} photos of the lesion; give more images.")
    given = any(value is not None for value in patient.values())
    predictor = Predictor.from_path(args.model)
    if given and predictor.patient_head is None:
        print("note: this model reads the photo alone; --age, --sex and --site are not used", file=sys.stderr)
    if args.gradcam:
        Path(args.gradcam).mkdir(parents=True, exist_ok=True)
    failures, answered = 0, []
    for path in args.images:
        shown = ascii(path)[1:-1]
        try:
            analysis = predictor.analyse(images.load_file(path), patient if given else None)
        except (images.ImageError, OSError) as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"error: {shown}: {message}", file=sys.stderr)
            failures += 1
            continue
        found = report.findings(analysis, predictor.bundle.thresholds)
        record = report.lesion_report(path, analysis, predictor.bundle, found)    # the app's download, to the letter
        answered.append((path, analysis, found[1]))
        top = record["top"]
        if args.gradcam:
            square = explain.display_square(analysis.decoded.rgb)
            target = Path(args.gradcam) / f"{_safe_stem(path)}_gradcam_{top}.png"
            target.write_bytes(explain.png_bytes(explain.overlay(square, analysis.cam(top))))
            record["gradcam"] = str(target)
        print(json.dumps(record))
    if args.one_lesion:
        if len(answered) < lesion.SMALLEST:
            return _fail(f"--one-lesion: only {len(answered)} of the photos could be read, so there is no combined "
                         "answer.")
        photos = [(path, analysis) for path, analysis, _ in answered]
        combined = lesion.combine(predictor, photos)
        found = lesion.findings(combined, photos, predictor.bundle.thresholds, [flags for *_, flags in answered])
        print(json.dumps(report.combined_report(combined, photos[0][1].patient, predictor.bundle, found)))
    return 1 if failures else 0


def _safe_stem(path: str) -> str:
    stem = Path(path).stem
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:80] or "image"


def cmd_evaluate(args) -> int:
    from . import evaluation
    from .bundle import inside_bundle
    from .jsonfiles import replace_json
    from .predict import Predictor
    created = False
    if args.json and Path(args.json).is_dir():
        return _fail(f"--json {args.json} is a folder; give a file name for the report.")
    if args.json and inside_bundle(args.json):
        return _fail(f"--json {args.json} is inside a model bundle; write the report outside it.")
    if args.json:   # an unwritable report path fails before the evaluation, not after it
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        created = not Path(args.json).exists()
        Path(args.json).touch()
    try:
        report = Predictor.from_path(args.model).evaluate(      # each slow step named on stderr as it starts
            args.data, skip_bad=args.skip_bad, skip_other_labels=args.skip_other_labels,
            on_stage=lambda text: print(f"{text}...", file=sys.stderr, flush=True), on_scoring=_every_tenth())
    except BaseException:
        if created:   # a failed evaluation leaves no empty report behind
            Path(args.json).unlink(missing_ok=True)
        raise
    print("\n".join(evaluation.summary_lines(report)))
    if args.json:
        replace_json(args.json, report)
    return 0


def _every_tenth():
    """A progress callback printing 'Scored done/total images' on stderr at each tenth of the way (a scoring of
    tens of thousands of photos takes many minutes)."""
    told = set()

    def scored(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth and tenth not in told:
            told.add(tenth)
            print(f"Scored {done}/{total} images", file=sys.stderr, flush=True)
    return scored


def cmd_export(args) -> int:
    from . import export
    try:
        out = export.export_bundle(args.model, args.format, args.out, quantize=args.quantize)
    except export.ExportError as exc:
        return _fail(str(exc))
    print(f"exported {args.format} to {out}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .bundle import BundleError
    from .data import DatasetError
    try:
        return {"predict": cmd_predict, "evaluate": cmd_evaluate, "export": cmd_export}[args.command](args)
    except (BundleError, DatasetError) as exc:
        return _fail(str(exc))
    except OSError as exc:   # an output path that cannot be written (a file where a folder should be, no permission)
        return _fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))


if __name__ == "__main__":
    _quiet_native_logs()
    sys.exit(main())
