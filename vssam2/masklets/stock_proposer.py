"""The reference proposer: sam2's own ``SAM2AutomaticMaskGenerator``, parameters mapped.

This is the proposer the study used (a grid of point prompts on the whole frame, predicted-IoU
and stability thresholds, box NMS, optional small-region clean-up; no crops). It is slow on
CPU (the mask decoder runs once per point prompt, see benchmarks/README.md) but it *is* sam2: other
proposers are checked against it.

Encoder sharing: :meth:`StockProposer.propose` accepts ``backbone_out`` (the output of
``model.forward_image`` on the preprocessed frame). The generator's image predictor is then
primed with those features exactly as ``SAM2ImagePredictor.set_image`` would do, and the
encoder does not run again. With the preprocessing of :func:`preprocess_frame` (the same
bilinear antialiased resize and ImageNet normalisation as sam2's ``SAM2Transforms``) the
proposals equal those computed from scratch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.modeling.sam2_base import SAM2Base
from sam2.sam2_image_predictor import SAM2ImagePredictor

from vssam2.masklets.proposals import ProposalParams, Proposals
from vssam2.masklets.sam2_model import backbone_feature_sizes
from vssam2.masklets.sam2_private import check_sam2_private_api

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def preprocess_frame(frame: torch.Tensor, image_size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 RGB frame → (1, 3, S, S) float32 model input, as ``SAM2Transforms`` does.

    /255, bilinear antialiased resize to ``image_size`` × ``image_size`` (torchvision's
    ``Resize`` on tensors), ImageNet mean / std normalisation.
    """
    x = frame.to(device).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prime_image_predictor(
    predictor: SAM2ImagePredictor, backbone_out: dict[str, Any], orig_hw: tuple[int, int]
) -> None:
    """Sets ``predictor``'s image features from ``backbone_out`` like ``set_image`` does."""
    model = predictor.model
    predictor.reset_predictor()
    predictor._orig_hw = [tuple(orig_hw)]
    _, vision_feats, _, _ = model._prepare_backbone_features(backbone_out)
    if model.directly_add_no_mem_embed:
        vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
    feats = [
        feat.permute(1, 2, 0).view(1, -1, *feat_size)
        for feat, feat_size in zip(vision_feats[::-1], predictor._bb_feat_sizes[::-1])
    ][::-1]
    predictor._features = {"image_embed": feats[-1], "high_res_feats": feats[:-1]}
    predictor._is_image_set = True


def sam2_generator(model: SAM2Base, params: ProposalParams) -> SAM2AutomaticMaskGenerator:
    """sam2's own ``SAM2AutomaticMaskGenerator`` with ``params`` (single crop, binary masks).

    Its image predictor hard-codes the feature sizes of 1024 input; they are reset for the
    model's image size.
    """
    generator = SAM2AutomaticMaskGenerator(
        model,
        points_per_side=params.points_per_side,
        points_per_batch=params.points_per_batch,
        pred_iou_thresh=params.pred_iou_thresh,
        stability_score_thresh=params.stability_score_thresh,
        stability_score_offset=params.stability_score_offset,
        mask_threshold=params.mask_threshold,
        box_nms_thresh=params.box_nms_thresh,
        crop_n_layers=0,
        min_mask_region_area=params.min_mask_region_area,
        output_mode="binary_mask",
    )
    generator.predictor._bb_feat_sizes = backbone_feature_sizes(model)
    return generator


class StockProposer:
    """Automatic proposals with sam2's ``SAM2AutomaticMaskGenerator`` (the reference).

    Args:
        model_or_predictor: a SAM2 model (``SAM2Base``; a ``SAM2VideoPredictor`` works too) or a
            ``SAM2ImagePredictor`` (its model is used).
        params: proposal parameters; ``crop_n_layers`` is 0 and the output mode binary masks.
    """

    name = "stock"

    def __init__(self, model_or_predictor: SAM2Base | SAM2ImagePredictor, params: ProposalParams | None = None) -> None:
        check_sam2_private_api()
        model = model_or_predictor.model if isinstance(model_or_predictor, SAM2ImagePredictor) else model_or_predictor
        if not isinstance(model, SAM2Base):
            raise TypeError(
                f"StockProposer needs a SAM2 model or SAM2ImagePredictor, got {type(model_or_predictor).__name__}"
            )
        self.model = model
        self.params = params if params is not None else ProposalParams()
        self.generator = sam2_generator(model, self.params)

    @contextmanager
    def _timed_set_image(
        self, backbone_out: dict[str, Any] | None, orig_hw: tuple[int, int], timings: dict[str, float]
    ) -> Iterator[None]:
        """Routes the generator's ``set_image`` through a timer, or through ``backbone_out``."""
        predictor = self.generator.predictor
        original = predictor.set_image
        device = self.model.device

        def set_image(image: np.ndarray) -> None:
            _sync(device)
            t0 = time.perf_counter()
            if backbone_out is None:
                original(image)
            else:
                prime_image_predictor(predictor, backbone_out, orig_hw)
            _sync(device)
            timings["encoder"] = timings.get("encoder", 0.0) + time.perf_counter() - t0

        predictor.set_image = set_image  # instance attribute shadows the method
        try:
            yield
        finally:
            del predictor.set_image

    @torch.inference_mode()
    def propose(self, image: torch.Tensor, backbone_out: dict[str, Any] | None = None) -> Proposals:
        """(H, W, 3) uint8 RGB frame → proposals sorted by decreasing predicted IoU.

        ``backbone_out``: ``model.forward_image`` of this frame preprocessed as
        :func:`preprocess_frame` does; the encoder is skipped when given ("encoder" time is
        then only the feature reshaping).
        """
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected an (H, W, 3) frame, got {tuple(image.shape)}")
        frame = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        frame = np.ascontiguousarray(frame.astype(np.uint8, copy=False))
        height, width = frame.shape[:2]
        timings: dict[str, float] = {}
        device = self.model.device
        _sync(device)
        t0 = time.perf_counter()
        with self._timed_set_image(backbone_out, (height, width), timings):
            records = self.generator.generate(frame)
        _sync(device)
        total = time.perf_counter() - t0
        timings.setdefault("encoder", 0.0)
        timings["decoder+postprocess"] = total - timings["encoder"]
        records.sort(key=lambda r: -float(r["predicted_iou"]))  # stable: ties keep sam2's order
        if records:
            masks = torch.from_numpy(np.stack([r["segmentation"] for r in records])).bool()
        else:
            masks = torch.zeros((0, height, width), dtype=torch.bool)
        return Proposals(
            masks=masks,
            predicted_iou=torch.tensor([float(r["predicted_iou"]) for r in records], dtype=torch.float32),
            stability=torch.tensor([float(r["stability_score"]) for r in records], dtype=torch.float32),
            timings=timings,
        )
