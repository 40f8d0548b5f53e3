"""vssam2: video semantic segmentation with SAM2 — metrics, data, refinement and classifiers."""

__version__ = "0.1.0"
