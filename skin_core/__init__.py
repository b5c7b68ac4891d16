"""skin_core: everything the skin-lesion demo does, without a user interface.

A research demo, not a medical device.
"""
import os

# The one place TensorFlow's C++ start-up chatter is turned down (errors still show): every entry point
# (train.py, the app, `python -m skin_core`, the scripts) imports skin_core before anything loads TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

NOTICE = ("Research demo, not a medical device. It must not be used to diagnose, treat or reassure; "
          "any lesion of concern needs a clinician.")
"""Said on every page of the app and in every lesion report."""
