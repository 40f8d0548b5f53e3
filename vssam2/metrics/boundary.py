"""Boundary IoU (mBIoU, Eq. 5–6) on the ground-truth boundary band."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torchmetrics import Metric

from vssam2.labels import IGNORE_INDEX, NUM_CLASSES
from vssam2.metrics.functional import (
    boundary_confusion_matrix,
    boundary_iou_per_image,
    check_pair,
    exact_mean,
    mean_iou,
)

BoundaryMode = Literal["image", "class"]
BOUNDARY_MODES: tuple[BoundaryMode, ...] = get_args(BoundaryMode)


class BoundaryIoU(Metric):
    """Mean boundary IoU.

    The band B of an image is every valid pixel within ``width`` pixels (chessboard distance)
    of a pixel with another GT label; the image border is not a boundary.

    - ``mode="image"`` (Eq. 6 as written, default): per image, agree = |{p ∈ B : pred = GT}|,
      score = agree / (2|B| − agree); the metric is the mean over images with |B| > 0.
    - ``mode="class"``: a confusion matrix restricted to B, mean IoU over classes present in B.

    Per-image scores are kept (one float64 per image) and averaged exactly
    (:func:`~vssam2.metrics.functional.exact_mean`), so the result does not depend on the
    order images arrive in or how they are split over ranks.

    Args:
        num_classes: number of classes C.
        width: band half-width in pixels.
        mode: "image" or "class".
        ignore_index: ignore id.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        width: int = 5,
        mode: BoundaryMode = "image",
        ignore_index: int = IGNORE_INDEX,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in BOUNDARY_MODES:
            raise ValueError(f"mode must be one of {BOUNDARY_MODES}, got {mode!r}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.num_classes = num_classes
        self.width = width
        self.mode = mode
        self.ignore_index = ignore_index
        # A rank without data syncs an empty tensor of self.dtype: keep it float64 like ours.
        self.set_dtype(torch.float64)
        if mode == "image":
            self.add_state("scores", default=[], dist_reduce_fx="cat")
        else:
            self.add_state(
                "confmat", default=torch.zeros(num_classes, num_classes + 1, dtype=torch.int64), dist_reduce_fx="sum"
            )

    def update(self, preds: torch.Tensor, target: torch.Tensor, validate: bool = True) -> None:
        """Adds (N, H, W) or (H, W) prediction / ground-truth id maps (``validate=False``: already checked)."""
        preds, target = check_pair(preds, target, self.num_classes, self.ignore_index, validate)
        if self.mode == "image":
            scores = boundary_iou_per_image(preds, target, self.width, self.ignore_index)
            self.scores.append(scores[~scores.isnan()].cpu())
        else:
            self.confmat += boundary_confusion_matrix(
                preds, target, self.num_classes, self.width, self.ignore_index
            ).to(self.confmat.device)

    def compute(self) -> torch.Tensor:
        """Returns mBIoU in [0, 1] (NaN when no image had a boundary band)."""
        if self.mode == "class":
            return mean_iou(self.confmat)
        return exact_mean(self.scores)
