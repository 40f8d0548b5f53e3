"""Datasets over the refinement statistics cache: shuffled masklet rows for training, whole
videos (with their joint histograms) for exact validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from vssam2.features.dataset import CachedVideoMasklets
from vssam2.fusion.cache import FusionCache
from vssam2.fusion.consistency import WindowSignatures, consistency_gains
from vssam2.fusion.gains import JointHistogram, action_gains
from vssam2.metrics.config import VCWindows

GainWeighting = Literal["pixels", "inverse_frequency"]
GAIN_WEIGHTINGS: tuple[str, ...] = ("pixels", "inverse_frequency")


def joint_of(arrays: dict[str, np.ndarray]) -> JointHistogram:
    """The joint histogram of one video's cache arrays."""
    return JointHistogram(
        torch.from_numpy(arrays["joint_row"].astype(np.int64)),
        torch.from_numpy(arrays["joint_base"].astype(np.int64)),
        torch.from_numpy(arrays["joint_gt"].astype(np.int64)),
        torch.from_numpy(arrays["joint_count"].astype(np.int64)),
    )


def inverse_frequency_weights(gt_pixels: torch.Tensor) -> torch.Tensor:
    """(C,) weight of a correct pixel of each GT class: 1/(pixels of the class), normalised so
    that the average pixel weighs 1.

    mIoU averages classes, so a pixel of class c moves it by about 1/(pixels of c): this is the
    first-order weight of a pixel in mIoU (``gain_weighting: inverse_frequency``).
    """
    pixels = gt_pixels.double()
    weight = torch.where(pixels > 0, 1.0 / pixels.clamp(min=1), torch.zeros_like(pixels))
    return weight * pixels.sum() / (weight * pixels).sum().clamp(min=1e-12)


def _scored_windows(signatures: WindowSignatures, windows: VCWindows) -> np.ndarray:
    """(W,) bool: the windows mVC_n scores (GT-stable pixels, and not the last under "scripts")."""
    scored = signatures.stable > 0
    if windows == "scripts":
        scored[[int(i) for i in signatures.last if i >= 0]] = False
    return scored


class FusionRows(Dataset):
    """Every masklet row of a split that has a candidate, with the gain of every action.

    Items are fetched in batches (``__getitems__``, use ``collate_fn=first_item``):
    ``{"features": (B, F) float32, "candidates": (B, k) int64, "gains": (B, 1 + k) float64
    pixel gains (−inf = no such action), "weighted_gains": the same with the split's
    ``inverse_frequency`` class weights (:func:`inverse_frequency_weights`),
    "consistency_gains": (B, 1 + k) float64 first-order gain in mVC_n of every action
    (:func:`~vssam2.fusion.consistency.consistency_gains`) in the units of the weighted gains,
    "area": (B,) int64}``.

    A stable pixel of window w weighs P / (N · |GT-stable of w|) (P the split's valid pixels, N
    its scored windows): one point of mVC_n then weighs about what one point of mIoU weighs in
    the ``inverse_frequency`` gains (P/100 of either).

    Args:
        cache: the statistics cache.
        split: split to read.
        videos: videos of the split (all must be in the cache).
        windows: the mVC_n window convention ("scripts" does not score a video's last window).
    """

    def __init__(self, cache: FusionCache, split: str, videos: Sequence[str], windows: VCWindows = "scripts") -> None:
        cache.check_split(split, list(videos))
        num_classes = int(cache.config["num_classes"])
        loaded = [cache.read(split, video) for video in videos]
        gt_pixels = torch.zeros(num_classes, dtype=torch.int64)
        for arrays in loaded:
            gt = arrays["joint_gt"].astype(np.int64)
            valid = gt < num_classes
            gt_pixels += torch.from_numpy(np.bincount(gt[valid], arrays["joint_count"][valid], num_classes)).long()
        weight = inverse_frequency_weights(gt_pixels)
        signatures = [WindowSignatures.from_arrays(arrays) for arrays in loaded]
        scored = [_scored_windows(sig, windows) for sig in signatures]
        num_windows = sum(int(s.sum()) for s in scored)
        pixel_scale = float(gt_pixels.sum()) / max(num_windows, 1)
        features, candidates, gains, weighted, steady, area = [], [], [], [], [], []
        for arrays, sig, scoring in zip(loaded, signatures, scored):
            cand = torch.from_numpy(arrays["candidates"].astype(np.int64))
            joint = joint_of(arrays)
            keep = cand[:, 0] >= 0  # a masklet without votes has one action: keep
            features.append(torch.from_numpy(arrays["features"])[keep])
            candidates.append(cand[keep])
            gains.append(action_gains(joint, cand, num_classes)[keep])
            weighted.append(action_gains(joint, cand, num_classes, weight)[keep])
            window_weight = np.where(scoring, pixel_scale / np.maximum(sig.stable, 1), 0.0)
            steady.append(consistency_gains(sig, cand, window_weight)[keep])
            area.append(torch.from_numpy(arrays["area"])[keep])
        self.features = torch.cat(features)  # (N, F) float32
        self.candidates = torch.cat(candidates)  # (N, k) int64
        self.gains = torch.cat(gains)  # (N, 1 + k) float64
        self.weighted_gains = torch.cat(weighted)  # (N, 1 + k) float64
        self.consistency_gains = torch.cat(steady)  # (N, 1 + k) float64
        self.area = torch.cat(area)  # (N,) int64
        if self.features.shape[0] == 0:
            raise ValueError(f"statistics cache {cache.directory}: split {split!r} has no masklet with a candidate")

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return [
            {
                "features": self.features[index],
                "candidates": self.candidates[index],
                "gains": self.gains[index],
                "weighted_gains": self.weighted_gains[index],
                "consistency_gains": self.consistency_gains[index],
                "area": self.area[index],
            }
        ]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]


class FusionVideos(CachedVideoMasklets):
    """One item per video of one rank's share of a split (sharded like evaluation).

    Items: ``{"video": str, "features": (N, F) float32, "candidates": (N, k) int64,
    "joint_row", "joint_base", "joint_gt", "joint_count": (M,) int64}`` and the window
    signatures (``vc_*`` arrays as tensors, :class:`~vssam2.fusion.consistency.WindowSignatures`).

    Args:
        cache: the statistics cache.
        split: split to read.
        videos: videos of the whole split with their frame counts (for balanced sharding).
        rank: this process's rank.
        world_size: number of processes.
    """

    def item(self, name: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        joint = joint_of(arrays)
        return {
            "video": name,
            "features": torch.from_numpy(arrays["features"]),
            "candidates": torch.from_numpy(arrays["candidates"].astype(np.int64)),
            "joint_row": joint.row,
            "joint_base": joint.base,
            "joint_gt": joint.gt,
            "joint_count": joint.count,
        } | {name: torch.from_numpy(np.asarray(arrays[name])) for name in WindowSignatures.ARRAYS}
