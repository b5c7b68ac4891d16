"""Training progress as it happens: human lines on stdout and JSON lines that the Retrain page (or any
other process) follows while a run is going."""
from __future__ import annotations

import json
import time
from pathlib import Path

import keras

from .jsonfiles import jsonable


class ProgressLog:
    """Human lines on stdout and, optionally, JSON lines another process can follow."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        if self.path:   # created now, so a path that cannot be written fails before any work, not at its end
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()

    def event(self, kind: str, message: str | None = None, **fields):
        if message:
            print(message, flush=True)
        if self.path:
            record = {"event": kind, "time": time.time(), **fields}
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, default=jsonable) + "\n")


class ProgressCallback(keras.callbacks.Callback):
    """Epoch, batch, metrics and ETA, every few seconds and at each epoch end."""

    def __init__(self, log: ProgressLog, phase: str, total_epochs: int, steps: int, batch_size: int,
                 every_s: float = 5.0):
        super().__init__()
        self.log, self.phase, self.total_epochs, self.steps = log, phase, total_epochs, steps
        self.batch_size, self.every_s = batch_size, every_s

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.start, self.last = epoch, time.time(), 0.0

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        if now - self.last < self.every_s and batch + 1 < self.steps:
            return
        self.last = now
        done = batch + 1
        per_step = (now - self.start) / done
        eta_epoch = per_step * (self.steps - done)
        eta_total = eta_epoch + per_step * self.steps * (self.total_epochs - self.epoch - 1)
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        self.log.event("batch", f"  [{self.phase}] epoch {self.epoch + 1}/{self.total_epochs} batch {done}/{self.steps} "
                       f"loss {metrics.get('loss', float('nan')):.4f} acc {metrics.get('accuracy', float('nan')):.3f} "
                       f"ETA {eta_epoch:.0f}s (run {eta_total / 60:.1f} min)",
                       phase=self.phase, epoch=self.epoch + 1, epochs=self.total_epochs, batch=done,
                       batches=self.steps, metrics=metrics, eta_s=eta_total)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.time() - self.start
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        images_per_s = self.steps * self.batch_size / seconds if seconds else 0.0
        metrics.update(epoch_seconds=seconds, images_per_s=images_per_s)
        if logs is not None:
            logs.update(epoch_seconds=seconds, images_per_s=images_per_s)
        summary = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("loss", "val_", "accuracy")))
        self.log.event("epoch", f"[{self.phase}] epoch {epoch + 1}/{self.total_epochs} {summary} "
                       f"({seconds:.0f}s, {images_per_s:.1f} img/s)",
                       phase=self.phase, epoch=epoch + 1, epochs=self.total_epochs, metrics=metrics)
