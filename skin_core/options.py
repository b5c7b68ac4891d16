"""The training options that have a fixed set of values, in a module without Keras or TensorFlow
imports, so train.py's argument parser and the Retrain page can list them without loading either.
The first value of each list is the default."""

BALANCE_CHOICES = ("sqrt_weights", "weights", "sampling", "logit_adjusted", "none")
MIX_CHOICES = ("none", "mixup", "cutmix")
TTA_VIEW_NAMES = {"none": ["identity"], "half_turn": ["identity", "rot180"],
                  "quarter_turns": ["identity", "rot90", "rot180", "rot270"],
                  "flips": ["identity", "flip_left_right", "flip_up_down", "rot180"]}
"""The test-time views of each mode, by name: the picture alone; with its half turn (180 degrees); turned by 0,
90, 180 and 270 degrees (counter-clockwise); with its three flips. The one definition: skin_core.predict builds
them in TensorFlow for the app, skin_core.export names them in an export's sidecar and applies them in NumPy."""
TTA_VIEWS = {mode: len(names) for mode, names in TTA_VIEW_NAMES.items()}
"""How many views each mode averages."""
TTA_CHOICES = ("auto", *TTA_VIEWS)   # auto: chosen on validation when a bundle is finished
STRATEGY_CHOICES = ("default", "mirrored", "multiworker")
