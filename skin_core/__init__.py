"""skin_core: everything the skin-lesion demo does, without a user interface.

A research demo, not a medical device.
"""
__version__ = "0.1.0"
