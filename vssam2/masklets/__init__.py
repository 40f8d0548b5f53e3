"""Masklet engine: SAM2 model loading and (later) masklet generation."""

from vssam2.masklets.sam2_model import (
    CHECKPOINT_URLS,
    OFFICIAL_CONFIGS,
    TINY_TEST_CONFIG,
    TINY_TEST_OVERRIDES,
    backbone_feature_sizes,
    image_predictor,
    load_sam2,
    load_sam2_video_predictor,
    resolve_config,
)

__all__ = [
    "CHECKPOINT_URLS",
    "OFFICIAL_CONFIGS",
    "TINY_TEST_CONFIG",
    "TINY_TEST_OVERRIDES",
    "backbone_feature_sizes",
    "image_predictor",
    "load_sam2",
    "load_sam2_video_predictor",
    "resolve_config",
]
