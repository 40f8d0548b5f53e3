"""Automatic mask proposals on one frame: the result type and the proposer protocol.

A proposer turns one RGB frame into scored binary masks (SAM2's automatic mask generator:
a grid of point prompts, predicted-IoU and stability thresholds, box NMS, min area).
Implementations: :class:`~vssam2.masklets.stock_proposer.StockProposer` (sam2's own
``SAM2AutomaticMaskGenerator``, the reference) and
:class:`~vssam2.masklets.fast_proposer.FastProposer` (same proposals, lower cost).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class ProposalParams:
    """Parameters of automatic proposals (defaults: the study's).

    Attributes:
        points_per_side: grid of points_per_side² point prompts.
        pred_iou_thresh: keep masks whose predicted IoU is at least this.
        stability_score_thresh: keep masks whose stability score is at least this.
        stability_score_offset: logit offset of the stability score.
        box_nms_thresh: box IoU above which the lower-scored of two masks is dropped.
        min_mask_region_area: masks (after hole / island clean-up in sam2) smaller than this
            many pixels are dropped; 0 = no clean-up.
        points_per_batch: point prompts decoded at once (memory vs. speed; no effect on output).
        mask_threshold: logit threshold of a binary mask.
    """

    points_per_side: int = 16
    pred_iou_thresh: float = 0.6
    stability_score_thresh: float = 0.8
    stability_score_offset: float = 0.9
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 0
    points_per_batch: int = 64
    mask_threshold: float = 0.0

    def cache_key(self) -> dict[str, Any]:
        """Parameters that change the output (points_per_batch does not)."""
        return {k: v for k, v in self.__dict__.items() if k != "points_per_batch"}


@dataclass
class Proposals:
    """Masks proposed on one frame, in decreasing predicted-IoU order.

    Attributes:
        masks: (N, H, W) bool at the frame's resolution.
        predicted_iou: (N,) float32.
        stability: (N,) float32.
        timings: seconds per stage (e.g. "encoder", "decoder", "postprocess"), for benchmarks.
    """

    masks: torch.Tensor
    predicted_iou: torch.Tensor
    stability: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.masks.shape[0])


class Proposer(Protocol):
    """Anything that proposes masks on a frame."""

    params: ProposalParams

    def propose(self, image: torch.Tensor, backbone_out: dict[str, Any] | None = None) -> Proposals:
        """(H, W, 3) uint8 RGB frame → proposals at the frame's resolution.

        ``backbone_out`` is ``model.forward_image(x)`` of this frame, preprocessed as sam2
        does (resize to image_size, ImageNet normalisation), when the caller already has it
        (the video source encodes each keyframe once for proposals and propagation); the
        proposer then skips its own encoder pass.
        """
        ...
