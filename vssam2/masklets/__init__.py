"""Masklet engine: masklet sources (SAM2, superpixels, oracle), the aggregator, SAM2 loading."""

from vssam2.masklets.aggregator import ORDERS, aggregate_masks, paint_order
from vssam2.masklets.base import TABLE_COLUMNS, MaskletSource, MaskletTable, MaskletTracker
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
    "ORDERS",
    "OFFICIAL_CONFIGS",
    "TABLE_COLUMNS",
    "TINY_TEST_CONFIG",
    "TINY_TEST_OVERRIDES",
    "MaskletSource",
    "MaskletTable",
    "MaskletTracker",
    "aggregate_masks",
    "backbone_feature_sizes",
    "image_predictor",
    "load_sam2",
    "load_sam2_video_predictor",
    "paint_order",
    "resolve_config",
]
