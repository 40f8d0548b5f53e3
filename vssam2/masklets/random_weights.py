"""Make a random-weight SAM2 produce usable masks, for tests and benchmarks without checkpoints.

A randomly initialised SAM2 predicts faint, noise-like mask logits and "no object" after the
keyframe, so nothing survives thresholds and propagation yields empty masks. These two
adjustments, and thresholds a random model's masks can pass, keep the whole pipeline
exercised; they are never applied to real checkpoints.
"""

from __future__ import annotations

import torch
from sam2.modeling.sam2_base import SAM2Base

from vssam2.masklets.proposals import ProposalParams


def sharpen_masks(model: SAM2Base, scale: float = 30.0) -> None:
    """Scales the last layer of the mask decoder's hypernetwork MLPs (logit spread ≈ 2 at 30)."""
    with torch.no_grad():
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(scale)


def keep_objects(model: SAM2Base, bias: float = 10.0) -> None:
    """Sets the object-score head's output bias so every tracked object stays "present"."""
    head = model.sam_mask_decoder.pred_obj_score_head
    last = head if isinstance(head, torch.nn.Linear) else head.layers[-1]
    with torch.no_grad():
        last.bias.fill_(bias)


def random_weight_params(points_per_side: int, points_per_batch: int = 64) -> ProposalParams:
    """Proposal thresholds that a sharpened random-weight model's masks pass: no predicted-IoU
    threshold, stability 0.5 at offset 0.5, no box NMS (the study's 0.6 / 0.8 / 0.9 / 0.7 reject
    every random mask)."""
    return ProposalParams(
        points_per_side=points_per_side,
        points_per_batch=points_per_batch,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.5,
        stability_score_offset=0.5,
        box_nms_thresh=1.0,
    )
