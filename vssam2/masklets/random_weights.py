"""Make a random-weight SAM2 produce usable masks, for tests and benchmarks without checkpoints.

A randomly initialised SAM2 predicts faint, noise-like mask logits and "no object" after the
keyframe, so nothing survives thresholds and propagation yields empty masks. These two
adjustments keep the whole pipeline exercised; they are never applied to real checkpoints.
"""

from __future__ import annotations

import torch
from sam2.modeling.sam2_base import SAM2Base


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
