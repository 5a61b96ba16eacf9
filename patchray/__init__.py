"""patchray: self-supervised PatchTask pretraining for person-centric recognition, on Ray."""
__version__ = "0.1.0"
