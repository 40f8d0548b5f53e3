"""Lightning callbacks: test-time refinement, results reports, segmentation overlays (disk + W&B)."""

from callbacks.overlays import SegmentationOverlays
from callbacks.refine import TestTimeRefinement
from callbacks.results import ResultsWriter

__all__ = ["ResultsWriter", "SegmentationOverlays", "TestTimeRefinement"]
