"""Fit the skin_core recipe with Keras' JAX backend, for GPU machines without TensorFlow.

Same data reading, lesion split, model, augmentation, class balancing, optimiser and best-epoch
selection as train.py; only the input feeding differs (in-memory arrays instead of tf.data, with
the augmentation layers at the front of the training graph). It writes weights and history; then
`python train.py --finish-from DIR ...` (TensorFlow, any CPU) calibrates, evaluates the held-out
test split and writes the bundle.

    KERAS_BACKEND=jax python scripts/train_jax.py --data HAM10000 --weights mobilenet_1_0_224_tf_no_top.h5 \
        --out-dir runs/jax --run name:epochs=40,balance=sqrt_weights
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import balanced_accuracy_score, f1_score  # noqa: E402

from skin_core import data  # noqa: E402
from skin_core.classes import CLASS_CODES  # noqa: E402
from skin_core.model import build_model, set_trainable_from  # noqa: E402
from skin_core.recipe import BestWeights, augmenter, class_weights, compile_model  # noqa: E402

DEFAULTS = dict(epochs=40, head_epochs=2, batch_size=32, lr=3e-4, head_lr=1e-3, weight_decay=1e-4,
                balance="sqrt_weights", label_smoothing=0.1, dropout=0.3, patience=10, seed=42, alpha=1.0)


def parse_run(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    settings = dict(DEFAULTS)
    for item in filter(None, rest.split(",")):
        key, value = item.split("=")
        settings[key] = type(DEFAULTS[key])(value) if not isinstance(DEFAULTS[key], str) else value
    return name, settings


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.time() - self.start)


class Printer(keras.callbacks.Callback):
    def __init__(self, name, phase, epochs):
        super().__init__()
        self.name, self.phase, self.epochs = name, phase, epochs

    def on_epoch_end(self, epoch, logs=None):
        print(f"{self.name} [{self.phase}] epoch {epoch + 1}/{self.epochs} "
              + " ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items()), flush=True)


def fit_one(name, s, x, y, parts, out_dir: Path, img_size: int, weights: str):
    keras.utils.set_random_seed(s["seed"])
    n_classes = len(CLASS_CODES)
    model = build_model(n_classes, img_size, s["alpha"], weights=weights, dropout=s["dropout"])
    trainer = keras.Sequential([keras.Input((img_size, img_size, 3)), augmenter(s["seed"]), model])
    xt, yt = x[parts["train"]], y[parts["train"]]
    xv, yv = x[parts["val"]], y[parts["val"]]
    onehot = np.eye(n_classes, dtype=np.float32)
    if s["balance"] == "sampling":
        raise SystemExit("balanced sampling needs the tf.data pipeline of train.py; use weights or sqrt_weights")
    cw = class_weights(yt, n_classes, s["balance"])
    best, timer = BestWeights("val_macro_f1"), EpochTimer()
    frames = []
    for phase, first, last, fraction, lr in (("head", 0, s["head_epochs"], 0.0, s["head_lr"]),
                                             ("fine-tune", s["head_epochs"], s["epochs"], 1.0, s["lr"])):
        steps = -(-len(yt) // s["batch_size"])
        set_trainable_from(model, fraction)
        schedule = lr if phase == "head" else keras.optimizers.schedules.CosineDecay(
            lr * 0.1, decay_steps=steps * (last - first), warmup_target=lr, warmup_steps=steps)
        compile_model(trainer, schedule, s["weight_decay"], s["label_smoothing"])
        callbacks = [best, timer, Printer(name, phase, s["epochs"])]
        if phase != "head":
            callbacks.append(keras.callbacks.EarlyStopping("val_macro_f1", mode="max", patience=s["patience"]))
        h = trainer.fit(xt, onehot[yt], batch_size=s["batch_size"], epochs=last, initial_epoch=first,
                        validation_data=(xv, onehot[yv]), class_weight=cw, callbacks=callbacks, verbose=0)
        frame = pd.DataFrame(h.history)
        frame.index = pd.RangeIndex(first + 1, first + 1 + len(frame), name="epoch")
        frame["phase"] = phase
        frames.append(frame)
    history = pd.concat(frames)
    history["epoch_seconds"] = timer.seconds[:len(history)]
    model.set_weights(best.weights)
    probs = model.predict(xv, batch_size=256, verbose=0)
    pred = probs.argmax(1)
    info = {"name": name, "settings": s, "best_epoch": best.best_epoch, "best_val_macro_f1": best.best,
            "val_balanced_accuracy": float(balanced_accuracy_score(yv, pred)),
            "val_macro_f1": float(f1_score(yv, pred, average="macro")), "backend": "jax", "replicas": 1,
            "seconds": float(sum(timer.seconds))}
    model.save_weights(out_dir / f"{name}.weights.h5")
    history.to_csv(out_dir / f"{name}.history.csv")
    (out_dir / f"{name}.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--detail-side", type=int, default=150)
    p.add_argument("--seed", type=int, default=42, help="split seed (must match train.py --finish-from)")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--budget-s", type=float, default=1e9, help="skip runs that would start after this")
    p.add_argument("--run", action="append", required=True, help="name:key=value,... (repeatable)")
    args = p.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    dataset = data.load_dataset(args.data)
    arrays = data.read_images(dataset.table, args.img_size, args.detail_side, workers=16)
    table = arrays.table
    table["subset"] = data.split_by_lesion(table, test_fraction=args.test_fraction,
                                           val_fraction=args.val_fraction, seed=args.seed)
    parts = {k: (table["subset"] == k).to_numpy() for k in ("train", "val", "test")}
    y = table["dx"].map({c: i for i, c in enumerate(CLASS_CODES)}).to_numpy()
    x = arrays.pixels.astype(np.float32)
    print(f"read {len(y)} images in {time.time() - t0:.0f}s; fingerprint {arrays.fingerprint[:12]}; "
          + ", ".join(f"{k} {int(v.sum())}" for k, v in parts.items()), flush=True)
    for spec in args.run:
        if time.time() - t0 > args.budget_s:
            print(f"skipping {spec}: over budget", flush=True)
            continue
        name, settings = parse_run(spec)
        fit_one(name, settings, x, y, parts, out_dir, args.img_size, args.weights)


if __name__ == "__main__":
    main()
