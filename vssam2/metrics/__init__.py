"""VSS metrics: torchmetrics classes over the pure functional core in :mod:`.functional`."""

from vssam2.metrics.boundary import BoundaryIoU
from vssam2.metrics.collection import METRIC_NAMES, VSSMetrics
from vssam2.metrics.config import MetricConfig
from vssam2.metrics.consistency import VideoConsistency
from vssam2.metrics.iou import SemanticIoU

__all__ = ["BoundaryIoU", "METRIC_NAMES", "MetricConfig", "SemanticIoU", "VSSMetrics", "VideoConsistency"]
