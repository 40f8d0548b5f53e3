"""Masklet engine: sources (SAM2, SAM 3, superpixels, oracle, degraded oracle), the aggregator, model loading."""

from vssam2.masklets.aggregator import ORDERS, aggregate_masks, paint_order
from vssam2.masklets.base import TABLE_COLUMNS, MaskletSource, MaskletTable, MaskletTracker
from vssam2.masklets.cache import MaskletCache, cache_key, open_cache
from vssam2.masklets.compute import CacheRunSummary, compute_cache
from vssam2.masklets.degraded import DegradedOracleSource
from vssam2.masklets.oracle import OracleSource, class_components
from vssam2.masklets.prompts import PromptSet, load_prompts
from vssam2.masklets.proposals import ProposalParams, Proposals, Proposer
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
from vssam2.masklets.sam2_video import SAM2FrameSource, SAM2VideoSource, stitch_ids
from vssam2.masklets.sam3_model import load_sam3, write_tiny_sam3
from vssam2.masklets.sam3_video import SAM3VideoSource
from vssam2.masklets.stock_proposer import StockProposer, preprocess_frame
from vssam2.masklets.superpixel import SuperpixelSource, link_ids
from vssam2.masklets.video_memory import add_mask_prompt, append_frames, init_state_from_frames, track_frame

__all__ = [
    "CHECKPOINT_URLS",
    "ORDERS",
    "OFFICIAL_CONFIGS",
    "TABLE_COLUMNS",
    "TINY_TEST_CONFIG",
    "TINY_TEST_OVERRIDES",
    "MaskletSource",
    "MaskletTable",
    "CacheRunSummary",
    "DegradedOracleSource",
    "MaskletCache",
    "MaskletTracker",
    "OracleSource",
    "SAM2FrameSource",
    "SAM2VideoSource",
    "SAM3VideoSource",
    "PromptSet",
    "StockProposer",
    "ProposalParams",
    "Proposals",
    "Proposer",
    "SuperpixelSource",
    "class_components",
    "link_ids",
    "add_mask_prompt",
    "append_frames",
    "init_state_from_frames",
    "preprocess_frame",
    "stitch_ids",
    "track_frame",
    "aggregate_masks",
    "backbone_feature_sizes",
    "cache_key",
    "compute_cache",
    "open_cache",
    "image_predictor",
    "load_sam2",
    "load_sam2_video_predictor",
    "load_prompts",
    "load_sam3",
    "write_tiny_sam3",
    "paint_order",
    "resolve_config",
]
