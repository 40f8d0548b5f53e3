"""Lightning callbacks: results reports, segmentation overlays (disk + W&B)."""

from callbacks.overlays import SegmentationOverlays
from callbacks.results import ResultsWriter

__all__ = ["ResultsWriter", "SegmentationOverlays"]
