"""The five numbers of the study's tables from one object: mIoU, WIoU, mBIoU, mVC8, mVC16."""

from __future__ import annotations

import torch
from torch import nn

from vssam2.metrics.boundary import BoundaryIoU
from vssam2.metrics.config import MetricConfig
from vssam2.metrics.consistency import VideoConsistency
from vssam2.metrics.functional import check_pair, confusion_matrix
from vssam2.metrics.iou import SemanticIoU
from vssam2.parallel import run_all

# Names as the paper's tables print them.
METRIC_NAMES: tuple[str, ...] = ("mIoU", "WIoU", "mBIoU", "mVC8", "mVC16")


class VSSMetrics(nn.Module):
    """mIoU, WIoU (frequency-weighted IoU), mBIoU and mVC_n for every n in ``config.vc_lengths``.

    Feed it ordered chunks of videos (any chunking); ``compute`` returns fractions in [0, 1].
    Under DDP each metric syncs its states on ``compute``; videos must be sharded whole.

    Args:
        config: the metric configuration (classes, ignore id, boundary band, mVC windows).
    """

    def __init__(self, config: MetricConfig = MetricConfig()) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.ignore_index = config.ignore_index
        self.iou = SemanticIoU(config.num_classes, config.ignore_index)
        self.boundary = BoundaryIoU(
            config.num_classes, config.boundary_width, config.boundary_mode, config.ignore_index
        )
        # One metric for every window length: they share one pass over the frames.
        self.consistency = (
            VideoConsistency(config.vc_lengths, config.vc_windows, config.num_classes, config.ignore_index)
            if config.vc_lengths
            else None
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor, video: str, start: int = 0, last: bool = False) -> None:
        """Adds one chunk of a video: (L, H, W) predicted and GT ids of frames start…start+L−1."""
        preds, target = check_pair(preds, target, self.num_classes, self.ignore_index)  # once for all
        if self.consistency is not None:  # a chunk out of order must not update the other metrics either
            self.consistency.check_chunk(video, start, tuple(target.shape[1:]))
        # Each metric's update is a few long single-threaded kernels that release the GIL:
        # on the CPU they run side by side, one per core. The confusion matrix is counted in
        # two halves of the chunk so that the work splits evenly between two cores (the
        # boundary band and the sequential mVC pass take about as long as each other).
        half = preds.shape[0] // 2
        updates = [
            lambda: self.boundary.update(preds, target, validate=False),
            lambda: confusion_matrix(preds[:half], target[:half], self.num_classes, self.ignore_index),
            lambda: confusion_matrix(preds[half:], target[half:], self.num_classes, self.ignore_index),
        ]
        if self.consistency is not None:
            updates.insert(
                1, lambda: self.consistency.update(preds, target, video=video, start=start, last=last, validate=False)
            )
        results = run_all(updates, preds.device)
        self.iou.update(confmat=results[-2] + results[-1])

    def compute(self) -> dict[str, torch.Tensor]:
        """Returns ``{"mIoU", "WIoU", "mBIoU", "mVC8", "mVC16", "per_class_iou"}`` (fractions)."""
        iou = self.iou.compute()
        results = {"mIoU": iou["mIoU"], "WIoU": iou["WIoU"], "mBIoU": self.boundary.compute()}
        if self.consistency is not None:
            for n, value in self.consistency.compute().items():
                results[f"mVC{n}"] = value
        results["per_class_iou"] = iou["per_class_iou"]
        return results

    def reset(self) -> None:
        """Clears every metric."""
        self.iou.reset()
        self.boundary.reset()
        if self.consistency is not None:
            self.consistency.reset()
