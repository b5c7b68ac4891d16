"""The training options that have a fixed set of values, in a module without Keras or TensorFlow
imports, so train.py's argument parser and the Retrain page can list them without loading either.
The first value of each list is the default."""

BALANCE_CHOICES = ("sqrt_weights", "weights", "sampling", "logit_adjusted", "none")
MIX_CHOICES = ("none", "mixup", "cutmix")
TTA_VIEWS = {"none": 1, "half_turn": 2, "quarter_turns": 4, "flips": 4}
"""Test-time views per mode: the picture alone; with its half turn (180 degrees); turned by 0, 90, 180 and
270 degrees; with its three flips. skin_core.explain builds them."""
TTA_CHOICES = ("auto", *TTA_VIEWS)   # auto: chosen on validation when a bundle is finished
STRATEGY_CHOICES = ("default", "mirrored", "multiworker")
