"""The refinement statistics cache: per-masklet statistics and exact outcomes of a split.

For one (masklet cache, base model, split), every chunk's masklets get their statistics
(:mod:`vssam2.fusion.statistics`) and the sparse joint (masklet × base × GT) histogram
(:mod:`vssam2.fusion.gains`), from which the pixel gain of every action and the exact
confusion matrix of any decision follow. Training a rule then reads K rows per chunk instead
of T·H·W pixels: an epoch over VSPW-sized splits takes seconds.

Layout (as the feature cache, :mod:`vssam2.features.cache`):
``<fusion_root>/<base method>-<key>/config.json`` and ``<split>/<video>.npz``, one file per
video written atomically once the video is done (an interrupted run resumes at the next
video). The key hashes the statistics configuration (version, features, top-k), the masklet
cache's key, the base method and its folder, the layout, ``clip_len`` and the classes.

Each ``.npz`` holds one row per masklet of each chunk: ``features`` (N, F) float32,
``candidates`` (N, k) int16 (−1 = none), ``ids``, ``start`` (the chunk's first frame),
``area``; and the joint histogram entries ``joint_row`` (−1 = outside every masklet),
``joint_base``, ``joint_gt``, ``joint_count``; and the window signatures of mVC_n
(``consistency_window`` n, :mod:`vssam2.fusion.consistency`) ``vc_rows``, ``vc_base``,
``vc_count``, ``vc_window``, ``vc_stable``, ``vc_fixed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from vssam2.features.cache import FeatureCache, open_feature_cache
from vssam2.fusion.consistency import WindowSignatures

FORMAT_VERSION = 2
ROW_ARRAYS = ("features", "candidates", "ids", "start", "area")
JOINT_ARRAYS = ("joint_row", "joint_base", "joint_gt", "joint_count")
CONSISTENCY_ARRAYS = WindowSignatures.ARRAYS


class FusionCache(FeatureCache):
    """One refinement statistics cache folder ``<fusion_root>/<base method>-<key>/``."""

    KIND = "refinement statistics cache"
    BUILD = "python -m vssam2.fusion --config ..."
    REQUIRED = ROW_ARRAYS + JOINT_ARRAYS + CONSISTENCY_ARRAYS

    @staticmethod
    def folder_name(config: Mapping[str, Any]) -> str:
        return str(config["base_method"])


def open_fusion_cache(directory: str) -> FusionCache:
    """Opens a statistics cache folder (a glob pattern matching one folder works too).

    Raises:
        DataError: naming the folder when it or its ``config.json`` is missing, corrupt, or of
            another key.
    """
    return cast(FusionCache, open_feature_cache(directory, FusionCache))
