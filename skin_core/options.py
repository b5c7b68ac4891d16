"""The training options that have a fixed set of values, in a module without Keras or TensorFlow
imports, so train.py's argument parser and the Retrain page can list them without loading either.
The first value of each list is the default."""

BALANCE_CHOICES = ("sqrt_weights", "weights", "sampling", "none")
MIX_CHOICES = ("none", "mixup", "cutmix")
TTA_CHOICES = ("auto", "half_turn", "quarter_turns", "flips", "none")
STRATEGY_CHOICES = ("default", "mirrored", "multiworker")
