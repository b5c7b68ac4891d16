"""Evaluation and training throughput against the bare model, so the pipeline is never the bottleneck.

    python bench/throughput.py [--model models/default] [--batch 32] [--steps 12] [--rounds 5]

Evaluation: Predictor.probabilities over prepared images versus the bare model on one tensor
already in memory, same batch size, both over the bundle's test-time views (and, for scale, the
bare model over one view). Training: steps of the real tf.data training pipeline (shuffle,
augmentation, prefetch) versus the same train step fed one batch from memory; side by side, the
pipeline with the augmentation first written (Keras's RandomFlip, RandomRotation and RandomZoom
in a row, three resamplings instead of one), and the pipeline with the camera changes (--photometric
--compression: saturation, sharpness and JPEG re-saving of half of each batch). Each round times the second
epoch of a two-epoch fit, as training runs (a fit's first epoch starts its iterator; timing one-epoch fits read
the pipelines at half the memory-fed rate in most rounds, while longer fits ran level); the ratios are medians of
the rounds' ratios, every round's rates recorded beside them.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from common import bare_over_views, run_main, write
import keras

from skin_core import data, recipe
from skin_core.options import TTA_VIEWS
from skin_core.predict import Predictor
from skin_core.recipe import compile_model
from skin_core.pipelines import training_dataset
from skin_core.training import TrainConfig
from skin_core.model import build_model, is_ensemble, set_trainable_from

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


class EpochSeconds(keras.callbacks.Callback):
    """The wall time of each epoch of one fit."""
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def images_per_s(fn, n_images, repeats=3):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return n_images * repeats / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    predictor = Predictor.from_path(args.model)
    size = predictor.input_size
    arrays = data.read_images(data.load_dataset(SAMPLE).table, size, predictor.detail_side)
    pixels = np.concatenate([arrays.pixels] * 4)[: args.batch * 8]
    model = predictor.bundle.model
    tensor = tf.constant(pixels.astype(np.float32))

    views = TTA_VIEWS[predictor.tta]

    bare_calls = {tta: bare_over_views(model, tta) for tta in {predictor.tta, "none"}}

    def bare_eval(tta):
        for i in range(0, len(pixels), args.batch):
            [out.numpy() for out in bare_calls[tta](tensor[i:i + args.batch])]

    evaluation = {"test_time_views": views,
                  "skin_core_images_per_s": images_per_s(lambda: predictor.probabilities(pixels, args.batch), len(pixels)),
                  "bare_model_same_views_images_per_s": images_per_s(lambda: bare_eval(predictor.tta), len(pixels)),
                  "bare_model_one_view_images_per_s": images_per_s(lambda: bare_eval("none"), len(pixels))}
    evaluation["ratio"] = evaluation["skin_core_images_per_s"] / evaluation["bare_model_same_views_images_per_s"]

    labels = np.arange(len(pixels)) % 7
    config = TrainConfig(data=str(SAMPLE), out="", batch_size=args.batch, seed=0)
    pipeline = training_dataset(pixels, labels, 7, config)
    camera_pipeline = training_dataset(pixels, labels, 7, TrainConfig(**{**config.__dict__, "photometric": True,
                                                                           "compression": True}))
    if is_ensemble(model):    # an ensemble's networks are trained one by one: time one network like them
        model = build_model(7, size, predictor.bundle.manifest["alpha"], weights=None)
    set_trainable_from(model, 0.7)
    compile_model(model, 1e-5, 1e-4, recipe.training_loss(labels, 7, "weights", 0.1))
    x0, y0 = next(iter(pipeline))
    memory = tf.data.Dataset.from_tensors((x0, y0)).repeat()
    model.fit(memory, steps_per_epoch=3, verbose=0)
    earlier = keras.Sequential([keras.layers.RandomFlip("horizontal_and_vertical", seed=0),
                                keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=1),
                                keras.layers.RandomZoom((-0.2, 0.1), fill_mode="reflect", seed=2),
                                *recipe.augmenter(0).layers[1:]])
    earlier_pipeline = (tf.data.Dataset.from_tensor_slices((pixels, np.eye(7, dtype=np.float32)[labels]))
                        .shuffle(len(labels)).repeat().batch(args.batch, drop_remainder=True)
                        .map(lambda x, y: (earlier(tf.cast(x, tf.float32), training=True), y),
                             num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
    sources = {"model_from_memory": memory, "tf_data_pipeline": pipeline, "earlier_pipeline": earlier_pipeline,
               "camera_pipeline": camera_pipeline}
    for _ in range(3):                        # trace and warm each input's training step before timing
        for source in sources.values():
            model.fit(source, steps_per_epoch=4, verbose=0)
    rounds = {name: [] for name in sources}
    for _ in range(args.rounds):              # interleaved rounds: drift hits every source alike
        for name, source in sources.items():
            # timed as training runs: the second epoch of a fit, its iterator already started and prefetching
            timer = EpochSeconds()
            model.fit(source, steps_per_epoch=args.steps, epochs=2, verbose=0, callbacks=[timer])
            rounds[name].append(args.steps * args.batch / timer.seconds[-1])
    per_round = {name: np.asarray(values) / np.asarray(rounds["model_from_memory"]) for name, values in rounds.items()}
    training = {"pipeline_images_per_s": float(np.median(rounds["tf_data_pipeline"])),
                "memory_images_per_s": float(np.median(rounds["model_from_memory"])),
                "ratio": float(np.median(per_round["tf_data_pipeline"])),
                "ratio_per_round": [round(float(r), 3) for r in per_round["tf_data_pipeline"]],
                "rounds_images_per_s": {name: [round(v, 1) for v in values] for name, values in rounds.items()},
                "earlier_pipeline_images_per_s": float(np.median(rounds["earlier_pipeline"])),
                "earlier_ratio": float(np.median(per_round["earlier_pipeline"])),
                "camera_pipeline_images_per_s": float(np.median(rounds["camera_pipeline"])),
                "camera_ratio": float(np.median(per_round["camera_pipeline"])),
                "trainable_share_of_body": 0.7}
    write("throughput", {"model": args.model, "input_size": size, "batch": args.batch,
                         "evaluation": evaluation, "training": training,
                         "targets": {"evaluation_ratio_min": 0.8, "training_ratio_min": 0.9}})


if __name__ == "__main__":
    run_main(main)
