"""Per-masklet statistics a refinement rule decides from (docs/refinement.md, "Statistics").

Everything here is read off what the majority vote already counts — the vote histogram of
one chunk (:class:`vssam2.refine.VoteCounts`: base pixels per (masklet, class)) — plus the
masklets' score table and, for base models that give them, summed class probabilities. The
same function feeds the statistics cache (training data) and the learned rule at test time,
so what a rule is trained on and what it sees are computed by one piece of code.

Candidates: the vote's top ``top_k`` classes of each masklet (stable order: more votes first,
ties → lower class id, so candidate 1 is exactly the majority vote's winner, Eq. 2). A rule's
actions are "keep the base prediction" (0) and "paint candidate j" (j = 1…k).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vssam2.masklets.base import MaskletTable
from vssam2.refine import VoteCounts

#: Bumped whenever a feature's definition changes: a learned rule refuses other versions.
STATS_VERSION: int = 1

#: Feature columns of :attr:`MaskletStatistics.features`, in order (``_j`` = candidate j).
BASE_FEATURES: tuple[str, ...] = (
    "share_1",  # votes of candidate 1 / voting pixels (the vote's confidence)
    "share_2",
    "share_3",
    "margin",  # share_1 − share_2: how contested the vote is
    "entropy",  # entropy of the vote histogram / log C
    "ignore_fraction",  # base pixels with no prediction / masklet pixels
    "log_area",  # log(1 + pixels in the chunk)
    "area_fraction",  # pixels / chunk pixels
    "frames_fraction",  # frames of the chunk the masklet spans (score table) / chunk frames
    "frame_area_fraction",  # pixels per spanned frame / frame pixels
    "predicted_iou",  # SAM2's predicted IoU (0 where the source has none)
    "stability",  # SAM2's stability score (0 where none)
    "has_scores",  # 1 where predicted IoU and stability exist
    "class_frequency_1",  # chunk base pixels of candidate 1 / chunk pixels
    "class_frequency_2",
    "class_coverage_1",  # this masklet's votes for candidate 1 / chunk base pixels of it
    "class_coverage_2",
)
PROBABILITY_FEATURES: tuple[str, ...] = (
    "soft_share_1",  # summed probability of candidate 1 / masklet pixels
    "soft_share_2",
    "soft_top_share",  # the largest summed-probability share of any class
    "soft_agrees",  # 1 where the probability-weighted winner is candidate 1
)


def feature_names(use_probs: bool) -> tuple[str, ...]:
    """The feature columns with or without probability summaries."""
    return BASE_FEATURES + (PROBABILITY_FEATURES if use_probs else ())


@dataclass
class StatisticsConfig:
    """What the statistics of a rule are (stored in caches and learned-rule checkpoints).

    Attributes:
        num_classes: C of the base predictions.
        top_k: candidates per masklet.
        use_probs: include the probability summaries (needs class probabilities).
        version: :data:`STATS_VERSION` the statistics were computed with.
    """

    num_classes: int
    top_k: int = 3
    use_probs: bool = False
    version: int = STATS_VERSION
    features: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        self.features = tuple(self.features) or feature_names(self.use_probs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_classes": int(self.num_classes),
            "top_k": int(self.top_k),
            "use_probs": bool(self.use_probs),
            "version": int(self.version),
            "features": list(self.features),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatisticsConfig:
        return cls(
            num_classes=int(data["num_classes"]),
            top_k=int(data["top_k"]),
            use_probs=bool(data["use_probs"]),
            version=int(data["version"]),
            features=tuple(data["features"]),
        )

    def mismatch(self, other: StatisticsConfig) -> list[str]:
        """The fields on which two configurations differ (empty when compatible)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {mine[k]} vs {theirs[k]}" for k in mine if mine[k] != theirs[k]]


@dataclass
class MaskletStatistics:
    """Statistics of the masklets present in one chunk (one row each).

    Attributes:
        rows: (K,) int64 rows of the vote histogram they describe (index into ``row_ids``).
        ids: (K,) int64 masklet ids.
        area: (K,) int64 pixels in the chunk.
        candidates: (K, k) int64 candidate classes, −1 where a masklet has fewer voted classes.
        features: (K, F) float32, columns :attr:`StatisticsConfig.features`.
    """

    rows: torch.Tensor
    ids: torch.Tensor
    area: torch.Tensor
    candidates: torch.Tensor
    features: torch.Tensor


def table_columns(
    table: MaskletTable | None, ids: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Score-table columns (predicted IoU, stability, first frame, last frame) of ``ids``.

    Ids the table lacks (and every id without a table) get NaN scores and frames −1.
    """
    count = ids.shape[0]
    iou, stability = np.full(count, np.nan), np.full(count, np.nan)
    first, last = np.full(count, -1, np.int64), np.full(count, -1, np.int64)
    if table is None or len(table) == 0 or count == 0:
        return iou, stability, first, last
    wanted = ids.numpy()
    order = np.argsort(table.id, kind="stable")
    sorted_ids = table.id[order]
    at = np.clip(np.searchsorted(sorted_ids, wanted), 0, len(sorted_ids) - 1)
    found = sorted_ids[at] == wanted
    index = order[at[found]]
    iou[found], stability[found] = table.predicted_iou[index], table.stability[index]
    first[found], last[found] = table.first_frame[index], table.last_frame[index]
    return iou, stability, first, last


def _candidates(class_votes: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k voted classes per row of a (K, C) int64 array (numpy), see :func:`candidate_classes`."""
    num, num_classes = class_votes.shape
    k = min(top_k, num_classes)
    # One key per (votes, class) that orders like (more votes, lower id): its k largest are the
    # stable sort's first k.
    key = class_votes * 256 + (255 - np.arange(num_classes, dtype=np.int64))  # (K, C), all > 0, distinct per row
    order = np.empty((num, k), dtype=np.int64)
    every = np.arange(num)
    for j in range(k):  # k arg-max passes: cheaper than sorting C classes for small k
        order[:, j] = key.argmax(axis=1)
        key[every, order[:, j]] = -1
    counts = np.take_along_axis(class_votes, order, axis=1)
    candidates = np.where(counts > 0, order, -1)
    if k < top_k:  # fewer classes than candidates: pad
        candidates = np.concatenate([candidates, np.full((num, top_k - k), -1)], axis=1)
        counts = np.concatenate([counts, np.zeros((num, top_k - k), np.int64)], axis=1)
    return candidates, counts


def candidate_classes(votes: torch.Tensor, num_classes: int, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k voted classes per row, stable (more votes first, ties → lower id).

    Args:
        votes: (K, ≥C) int64 vote counts.

    Returns:
        candidates: (K, k) int64, −1 where a row has fewer than k voted classes.
        counts: (K, k) int64 their votes (0 at −1).
    """
    candidates, counts = _candidates(votes[:, :num_classes].numpy().astype(np.int64), top_k)
    return torch.from_numpy(candidates), torch.from_numpy(counts)


def masklet_statistics(
    counts: VoteCounts,
    config: StatisticsConfig,
    frames: int,
    start: int,
    table: MaskletTable | None = None,
    soft_votes: torch.Tensor | None = None,
) -> MaskletStatistics:
    """Statistics of every masklet present in a chunk's vote histogram.

    Computed in numpy: the arrays are small (K masklets × C classes), where torch's per-call
    cost would dominate (benchmarks/README, "bench_rules.py").

    Args:
        counts: the chunk's vote histogram (:func:`vssam2.refine.count_votes`).
        config: which statistics.
        frames: frames in the chunk (T).
        start: the chunk's first frame in the video (for the score table's frame span).
        table: the video's masklet score table (None: scores and frame spans unknown, then
            frames_fraction = 1 and the scores 0 with has_scores 0).
        soft_votes: (rows, C) float64 summed class probabilities per row; required when
            ``config.use_probs``.

    Returns:
        One row per present masklet, in histogram-row order.
    """
    votes = counts.votes.numpy()  # (rows, 256) int64
    num_classes, k = config.num_classes, config.top_k
    area_all = votes.sum(axis=1)
    present = area_all > 0
    present[0] = False
    rows = np.flatnonzero(present)
    v = votes[rows]  # (K, 256)
    num = rows.shape[0]
    area = area_all[rows].astype(np.float64)
    class_votes = v[:, :num_classes]
    voting = np.maximum(class_votes.sum(axis=1), 1).astype(np.float64)
    candidates, cand_votes = _candidates(class_votes, k)
    share = np.zeros((num, max(k, 3)))
    share[:, :k] = cand_votes / voting[:, None]
    p = class_votes / voting[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1) / np.log(max(num_classes, 2))
    chunk_pixels = max(float(area_all.sum()), 1.0)
    frame_pixels = max(chunk_pixels / max(frames, 1), 1.0)
    class_pixels = votes[:, :num_classes].sum(axis=0).astype(np.float64)  # (C,) chunk base pixels per class

    def of_candidate(values: np.ndarray, j: int) -> np.ndarray:
        """(K,) values[candidate j] (0 where there is none)."""
        if j >= k:
            return np.zeros(num)
        return np.where(candidates[:, j] >= 0, values[np.maximum(candidates[:, j], 0)], 0.0)

    def coverage(j: int) -> np.ndarray:
        if j >= k:
            return np.zeros(num)
        return np.where(candidates[:, j] >= 0, cand_votes[:, j] / np.maximum(of_candidate(class_pixels, j), 1), 0.0)

    ids = counts.row_ids[torch.from_numpy(rows)]
    iou, stability, first, last = table_columns(table, ids)
    has_scores = ~(np.isnan(iou) | np.isnan(stability))
    if table is None:
        spanned = np.full(num, frames, np.int64)
    else:
        spanned = np.minimum(last, start + frames - 1) - np.maximum(first, start) + 1
        spanned = np.where(first < 0, frames, np.clip(spanned, 1, frames))
    columns = [
        share[:, 0],
        share[:, 1],
        share[:, 2],
        share[:, 0] - share[:, 1],
        entropy,
        v[:, num_classes:].sum(axis=1) / np.maximum(area, 1),
        np.log1p(area),
        area / chunk_pixels,
        spanned / max(frames, 1),
        area / spanned / frame_pixels,
        np.nan_to_num(iou, nan=0.0),
        np.nan_to_num(stability, nan=0.0),
        has_scores.astype(np.float64),
        of_candidate(class_pixels, 0) / chunk_pixels,
        of_candidate(class_pixels, 1) / chunk_pixels,
        coverage(0),
        coverage(1),
    ]
    if config.use_probs:
        if soft_votes is None:
            raise ValueError("these statistics use class probabilities (use_probs), but none were given")
        soft = soft_votes.numpy()[rows]  # (K, C) float64
        pixels = np.maximum(area, 1)

        def soft_of(j: int) -> np.ndarray:
            if j >= k:
                return np.zeros(num)
            cls = candidates[:, j]
            return np.where(cls >= 0, np.take_along_axis(soft, np.maximum(cls, 0)[:, None], axis=1)[:, 0], 0.0)

        columns += [
            soft_of(0) / pixels,
            soft_of(1) / pixels,
            soft.max(axis=1) / pixels,
            (soft.argmax(axis=1) == candidates[:, 0]).astype(np.float64),
        ]
    features = np.stack(columns, axis=1).astype(np.float32)  # (K, F)
    return MaskletStatistics(
        torch.from_numpy(rows),
        ids,
        torch.from_numpy(area_all[rows]),
        torch.from_numpy(candidates.astype(np.int64)),
        torch.from_numpy(features),
    )
