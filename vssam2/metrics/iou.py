"""Dataset-level IoU: mIoU, frequency-weighted IoU and per-class IoU from one confusion matrix."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from vssam2.labels import IGNORE_INDEX, NUM_CLASSES
from vssam2.metrics.functional import (
    check_pair,
    confusion_matrix,
    iou_from_confusion,
    mean_iou,
    weighted_iou,
)


class SemanticIoU(Metric):
    """mIoU, WIoU and per-class IoU over one confusion matrix for the whole dataset.

    Pixels whose target is ``ignore_index`` are skipped; a prediction of ``ignore_index`` is
    wrong on every valid pixel and a false positive of no class. mIoU averages the classes
    that have ground-truth pixels.

    Args:
        num_classes: number of classes C.
        ignore_index: ignore id of the target / "no prediction" id of the prediction.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat", default=torch.zeros(num_classes, num_classes + 1, dtype=torch.int64), dist_reduce_fx="sum"
        )

    def update(
        self,
        preds: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        validate: bool = True,
        confmat: torch.Tensor | None = None,
    ) -> None:
        """Adds (N, H, W) or (H, W) prediction / ground-truth id maps (``validate=False``: already
        checked), or a (C, C + 1) confusion matrix computed elsewhere (``confmat``, e.g. by
        :func:`~vssam2.metrics.functional.confusion_from_histograms`)."""
        if confmat is not None:
            if preds is not None or target is not None:
                raise ValueError("give either preds and target, or confmat")
            if tuple(confmat.shape) != tuple(self.confmat.shape):
                raise ValueError(f"confusion matrix must be {tuple(self.confmat.shape)}, got {tuple(confmat.shape)}")
            self.confmat += confmat.to(self.confmat)
            return
        if preds is None or target is None:
            raise ValueError("SemanticIoU.update needs preds and target (or confmat)")
        preds, target = check_pair(preds, target, self.num_classes, self.ignore_index, validate)
        self.confmat += confusion_matrix(preds, target, self.num_classes, self.ignore_index).to(self.confmat.device)

    def compute(self) -> dict[str, torch.Tensor]:
        """Returns ``{"mIoU", "WIoU", "per_class_iou" (C,) with NaN for absent classes}``."""
        return {
            "mIoU": mean_iou(self.confmat),
            "WIoU": weighted_iou(self.confmat),
            "per_class_iou": iou_from_confusion(self.confmat),
        }
