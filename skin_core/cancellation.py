"""Stopping a training run when it is cancelled (SIGTERM, which the Retrain page's Cancel sends).

train.py's signal handler marks the cancel and raises TrainingCancelled at once. That exception can be
lost: when it lands while TensorFlow converts a step function (AutoGraph), the conversion error is logged
and the unconverted function used, and the run would go on to write its bundle. So fitting checks the
mark after every batch and epoch, and the bundle is not written once it is set. Once the bundle is being
written, the run finishes whatever arrives (TOO_LATE).
"""
from __future__ import annotations

import threading

import keras


class TrainingCancelled(Exception):
    pass


REQUESTED = threading.Event()
"""Set by train.py's signal handler; cleared when its run has ended."""

TOO_LATE = threading.Event()
"""Set once the finished run's bundle is being written: from then on the run completes, and a cancel that
arrives is ignored, so that a complete bundle is never reported as cancelled ("nothing was written") or left
with its checkpoint half removed. Cleared by train.py as each of its runs starts and ends."""


def stop_if_requested() -> None:
    if REQUESTED.is_set():
        raise TrainingCancelled()


class StopWhenCancelled(keras.callbacks.Callback):
    """Raises TrainingCancelled at the first batch or epoch end after a cancel whose own exception was lost."""

    def on_train_batch_end(self, batch, logs=None):
        stop_if_requested()

    def on_test_batch_end(self, batch, logs=None):
        stop_if_requested()

    def on_epoch_end(self, epoch, logs=None):
        stop_if_requested()
