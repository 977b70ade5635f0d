"""resweep: hyperparameter studies of image-restoration training on Ray."""

__version__ = "0.1.0"
