"""Masklet feature vectors: extraction (encoder → pooling) and the per-split feature cache."""

from vssam2.features.cache import FeatureCache, feature_cache_config, open_feature_cache
from vssam2.features.compute import FeatureRunSummary, compute_feature_cache
from vssam2.features.dataset import CachedMaskletVectors, CachedVideoMasklets, first_item
from vssam2.features.extract import ClipMasklets, encode_frames, extract_clip_masklets, paint_rows

__all__ = [
    "CachedMaskletVectors",
    "CachedVideoMasklets",
    "ClipMasklets",
    "FeatureCache",
    "FeatureRunSummary",
    "compute_feature_cache",
    "encode_frames",
    "extract_clip_masklets",
    "feature_cache_config",
    "first_item",
    "open_feature_cache",
    "paint_rows",
]
