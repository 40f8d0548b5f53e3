"""Lightning callbacks: test-time refinement, results reports, segmentation overlays (disk + W&B)."""

from lightning.pytorch import Callback

from callbacks.overlays import SegmentationOverlays
from callbacks.refine import TestTimeRefinement
from callbacks.results import ResultsWriter


def default_callbacks() -> list[Callback]:
    """What every ``evaluate.py`` / ``train.py`` run gets: the results files and the overlays."""
    return [ResultsWriter(), SegmentationOverlays()]


__all__ = ["ResultsWriter", "SegmentationOverlays", "TestTimeRefinement", "default_callbacks"]
