"""Fit the skin_core recipe on a GPU machine that has PyTorch but no TensorFlow.

Keras runs on its PyTorch backend here: the same model, augmentation, class balancing, optimiser,
metrics and best-epoch selection as train.py (all from skin_core.model and skin_core.recipe); only
the feeding differs (arrays in memory instead of tf.data). The defaults are this script's own
(DEFAULTS below: 40 epochs, patience 10, class weights), so name every setting a run should share
with a train.py run. PyTorch rather than JAX because XLA's
depthwise-convolution gradients made one MobileNet epoch take minutes (docs/experiments.md, run 2).

Only the training and validation images need to travel (scripts/gpu_pack.py gathers them): `--split`
gives each image's subset (the split.csv of the bundle whose split the run keeps, one trained on the
whole dataset), and test rows are never read. The best epoch's weights, the history and a JSON summary are rewritten after every better
epoch, so a run cut short still leaves its best model. Then, on any CPU with TensorFlow,

    python train.py --finish-from OUT/NAME --data FULL_DATASET --split-from SPLIT_BUNDLE --out BUNDLE

takes the split of the bundle whose split.csv was packed, checks that the training and validation images
are the same ones, calibrates, evaluates the held-out test split and writes the bundle.

    python scripts/train_gpu.py --data PACK/data --split PACK/split.csv \
        --weights PACK/weights/mobilenet_1_0_224_tf_no_top.h5 --out-dir runs/gpu --time-budget-s 420 \
        --run name:epochs=60,batch_size=64,lr=6e-4,balance=weights,photometric=true,compression=true

compression=true re-saves half of each batch's photos as JPEG (quality 30-95) on CPU threads, as
train.py --compression does; here before the augmentation layers, which run inside the model.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
# a GPU machine gets a copy of the repository without scripts/setup.sh (no TensorFlow, no installed skin_core)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import balanced_accuracy_score, f1_score  # noqa: E402

from skin_core import data, splits  # noqa: E402
from skin_core.classes import CLASS_CODES  # noqa: E402
from skin_core.model import WeightsError, build_model, resolve_weights, set_trainable_from  # noqa: E402
from skin_core.run_config import default_of  # noqa: E402
from skin_core.recipe import (BestWeights, JpegResavedBatches, augmenter, class_weights,  # noqa: E402
                             compile_model, phase_learning_rate, phases, training_loss)

DEFAULTS = {**{name: default_of(name) for name in (
    "head_epochs", "batch_size", "lr", "head_lr", "weight_decay", "label_smoothing", "dropout", "seed", "alpha",
    "fine_tune_fraction", "photometric", "colour_constancy", "compression")},
    "epochs": 40, "patience": 10, "balance": "weights"}     # train.py's defaults, but a longer GPU schedule
# balanced sampling and label mixing live in train.py's tf.data pipeline; arrays fed to fit() cannot do them
BALANCE_HERE = ("weights", "sqrt_weights", "logit_adjusted", "none")


def parse_run(text: str) -> tuple[str, dict]:
    """'name:key=value,...' into the run's settings; an unknown key or a setting this script cannot
    honour stops it before any image is read, instead of training something else than asked."""
    name, _, rest = text.partition(":")       # a bare name trains the defaults
    if not name or "=" in name:
        raise SystemExit(f"error: --run {text} must be NAME:key=value,... (a name, a colon, then the settings)")
    settings = dict(DEFAULTS)
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"error: unknown setting '{key}' in --run {text} (known: {', '.join(DEFAULTS)})")
        default = DEFAULTS[key]
        if isinstance(default, bool):
            settings[key] = value.lower() in ("1", "true", "yes")
        else:
            settings[key] = value if isinstance(default, str) else type(default)(value)
    if settings["balance"] not in BALANCE_HERE:
        raise SystemExit(f"error: balance={settings['balance']} is not available here ({', '.join(BALANCE_HERE)}); "
                         "use train.py for balanced sampling")
    return name, settings


class EpochLog(keras.callbacks.Callback):
    """Prints each epoch and keeps its metrics and wall time, across phases."""

    def __init__(self, name: str, total: int, head_epochs: int):
        super().__init__()
        self.name, self.total, self.head_epochs, self.rows = name, total, head_epochs, []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        row = {k: float(v) for k, v in (logs or {}).items()}
        self.rows.append({**row, "phase": "head" if epoch < self.head_epochs else "fine-tune",
                          "epoch_seconds": round(time.time() - self.start, 2)})
        print(f"{self.name} epoch {epoch + 1}/{self.total} {self.rows[-1]['epoch_seconds']:.1f}s "
              + " ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, index=pd.RangeIndex(1, len(self.rows) + 1, name="epoch"))


class SaveBest(keras.callbacks.Callback):
    """Writes the best weights so far, the history and the summary after each better epoch."""

    def __init__(self, best: BestWeights, save):
        super().__init__()
        self.best, self.save, self.saved = best, save, None

    def on_epoch_end(self, epoch, logs=None):
        if self.best.best_epoch != self.saved:
            self.saved = self.best.best_epoch
            self.save()


def load_train_val(args) -> tuple[pd.DataFrame, np.ndarray, str]:
    """The training and validation rows with their subset, their pixels, and the split's digest."""
    table = data.load_dataset(args.data).table
    table["subset"] = splits.subsets_from_file(table, args.split)     # never re-derived here: see --split
    table = table[table["subset"].isin(["train", "val"])].reset_index(drop=True)
    arrays = data.read_images(table, args.img_size, args.detail_side, workers=os.cpu_count() or 4)
    return arrays.table, arrays.pixels, splits.split_digest(arrays.table)


def make_trainer(s, img_size: int, weights) -> tuple[keras.Model, keras.Sequential]:
    """The model, and the model behind the augmentation layers that training fits."""
    model = build_model(len(CLASS_CODES), img_size, s["alpha"], weights=weights, dropout=s["dropout"],
                        colour_constancy=s["colour_constancy"])
    return model, keras.Sequential([keras.Input((img_size, img_size, 3)), augmenter(s["seed"], s["photometric"]),
                                    model])


def training_feed(s, x, targets) -> dict:
    """fit()'s training arguments: the arrays themselves, or batches re-saved as JPEG on CPU threads."""
    if s["compression"]:
        batches = JpegResavedBatches(x, targets, s["batch_size"], s["seed"], workers=min(8, os.cpu_count() or 1))
        return {"x": batches, "validation_batch_size": s["batch_size"]}
    return {"x": x, "y": targets, "batch_size": s["batch_size"]}


def probe_epoch_seconds(s, x, y, xv, yv, img_size, steps, val_steps) -> float:
    """Seconds one whole-network epoch will take, from a throwaway model's second short epoch."""
    n_classes = len(CLASS_CODES)
    model, trainer = make_trainer(s, img_size, weights=None)
    set_trainable_from(model, s["fine_tune_fraction"])
    compile_model(trainer, s["lr"], s["weight_decay"], training_loss(y, n_classes, s["balance"], s["label_smoothing"]))
    probe, probe_val = min(20 * s["batch_size"], len(y)), min(5 * s["batch_size"], len(yv))
    onehot = np.eye(n_classes, dtype=np.float32)
    timings = []
    for _ in range(2):
        start = time.time()
        trainer.fit(**training_feed(s, x[:probe], onehot[y[:probe]]), epochs=1, verbose=0,
                    validation_data=(xv[:probe_val], onehot[yv[:probe_val]]))
        timings.append(time.time() - start)
    per_step = timings[-1] / (-(-probe // s["batch_size"]) + -(-probe_val // s["batch_size"]))
    return per_step * (steps + val_steps)


def fit_one(name, s, table, x, digest, out_dir: Path, args, deadline: float):
    keras.utils.set_random_seed(s["seed"])
    n_classes = len(CLASS_CODES)
    y = table["dx"].map({c: i for i, c in enumerate(CLASS_CODES)}).to_numpy()
    train, val = (table["subset"] == "train").to_numpy(), (table["subset"] == "val").to_numpy()
    xt, yt, xv, yv = x[train], y[train], x[val], y[val]
    steps, val_steps = -(-len(yt) // s["batch_size"]), -(-len(yv) // s["batch_size"])
    if args.time_budget_s:
        epoch_s = probe_epoch_seconds(s, xt, yt, xv, yv, args.img_size, steps, val_steps)
        affordable = int((deadline - time.time()) / (1.05 * epoch_s))
        print(f"{name}: one epoch ~{epoch_s:.1f}s; {affordable} epochs fit the budget", flush=True)
        if affordable < s["epochs"]:
            s["epochs_planned"], s["epochs"] = s["epochs"], max(s["head_epochs"] + 1, affordable)
    model, trainer = make_trainer(s, args.img_size, args.weights)
    onehot = np.eye(n_classes, dtype=np.float32)
    weights = class_weights(yt, n_classes, s["balance"])
    loss = training_loss(yt, n_classes, s["balance"], s["label_smoothing"])
    best, log = BestWeights("val_macro_f1"), EpochLog(name, s["epochs"], s["head_epochs"])
    started = time.time()

    def save(**extra):
        current = model.get_weights()
        model.set_weights(best.weights)
        model.save_weights(out_dir / f"{name}.weights.h5")
        model.set_weights(current)
        log.history().to_csv(out_dir / f"{name}.history.csv")
        summary = {"name": name, "settings": {**s, "img_size": args.img_size, "detail_side": args.detail_side},
                   "best_epoch": best.best_epoch, "best_val_macro_f1": best.best, "backend": keras.backend.backend(),
                   "replicas": 1, "machine": _machine(), "split_digest": digest, "seconds": round(time.time() - started, 1), **extra}
        (out_dir / f"{name}.json").write_text(json.dumps(summary, indent=2))
        return summary

    for phase, first, last, fraction, lr in phases(s["head_epochs"], s["epochs"], s["fine_tune_fraction"],
                                                   s["head_lr"], s["lr"]):
        set_trainable_from(model, fraction)
        compile_model(trainer, phase_learning_rate(phase, lr, steps, last - first), s["weight_decay"], loss)
        callbacks = [best, log, SaveBest(best, save)]
        if phase != "head":
            callbacks.append(keras.callbacks.EarlyStopping("val_macro_f1", mode="max", patience=s["patience"]))
        trainer.fit(**training_feed(s, xt, onehot[yt]), epochs=last, initial_epoch=first,
                    validation_data=(xv, onehot[yv]), class_weight=weights, callbacks=callbacks, verbose=0)
    model.set_weights(best.weights)
    predicted = model.predict(xv, batch_size=256, verbose=0).argmax(1)
    summary = save(val_balanced_accuracy=float(balanced_accuracy_score(yv, predicted)),
                   val_macro_f1=float(f1_score(yv, predicted, average="macro")))
    print(json.dumps(summary), flush=True)


def _machine() -> str:
    """What the fitting ran on, for the model card's wall time."""
    if keras.backend.backend() == "torch":
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    return f"{os.cpu_count()} CPU cores"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (all images, or the training and validation ones)")
    p.add_argument("--split", required=True,
                   help="CSV of image_id, subset: the split.csv of the bundle whose split the run keeps (gpu_pack.py "
                        "packs it). A split is not derived here: train.py's also keeps copies of one photo under two "
                        "lesion ids on one side, which --finish-from checks")
    p.add_argument("--weights", required=True, help="ImageNet MobileNet .h5 weights, or 'imagenet'")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--detail-side", type=int, default=150, help="cap on detail, as train.py (the copies' short side)")
    p.add_argument("--time-budget-s", type=float, default=0,
                   help="fit the epochs into this many seconds from the start, by timing a short probe first")
    p.add_argument("--run", action="append", required=True, help="name:key=value,... (repeatable)")
    args = p.parse_args()
    runs = [parse_run(spec) for spec in args.run]
    try:                        # a mistyped path stops here, before any image is read or timed
        resolve_weights(args.weights)
    except WeightsError as exc:
        raise SystemExit(f"error: {exc}") from None
    started = time.time()
    deadline = started + args.time_budget_s if args.time_budget_s else float("inf")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if keras.backend.backend() == "torch":
        import torch
        torch.backends.cudnn.benchmark = True
        print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}", flush=True)
    try:
        table, x, digest = load_train_val(args)
    except data.DatasetError as exc:
        raise SystemExit(f"error: {exc}") from None
    x = x.astype(np.float32)
    print(f"read {len(table)} images in {time.time() - started:.0f}s: "
          + ", ".join(f"{k} {n}" for k, n in table["subset"].value_counts().items()), flush=True)
    for name, settings in runs:
        fit_one(name, settings, table, x, digest, out_dir, args, deadline)


if __name__ == "__main__":
    main()
