"""ctsynth: synthetic CT generation services and shared libraries."""

__version__ = "0.1.0"
