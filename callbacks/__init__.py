"""Lightning callbacks: test-time refinement, results and sweep reports, segmentation overlays (disk + W&B)."""

from lightning.pytorch import Callback

from callbacks.overlays import SegmentationOverlays
from callbacks.refine import TestTimeRefinement
from callbacks.results import ResultsWriter
from callbacks.sweep import SweepWriter


def default_callbacks() -> list[Callback]:
    """What every ``evaluate.py`` / ``train.py`` run gets: the results files and the overlays."""
    return [ResultsWriter(), SweepWriter(), SegmentationOverlays()]


__all__ = ["ResultsWriter", "SegmentationOverlays", "SweepWriter", "TestTimeRefinement", "default_callbacks"]
