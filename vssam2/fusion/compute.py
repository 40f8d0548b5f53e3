"""Building the refinement statistics cache of a split (:mod:`vssam2.fusion.cache`).

``python -m vssam2.fusion`` runs :func:`compute_fusion_cache`: it streams one rank's share
of a split (whole videos, sharded as evaluation shards them) with the cached masklets and
the base predictions, and writes one file per (base method, video). Finished videos are
skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vssam2.datasets.streaming import rank_from_env
from vssam2.errors import DataError
from vssam2.features.compute import FeatureRunSummary
from vssam2.fusion.cache import FORMAT_VERSION, FusionCache
from vssam2.fusion.consistency import SignatureBuilder
from vssam2.fusion.gains import joint_histogram, masklet_rows
from vssam2.fusion.rules import RuleInputs
from vssam2.fusion.statistics import MaskletStatistics, StatisticsConfig, masklet_statistics
from vssam2.labels import IGNORE_INDEX
from vssam2.masklets.base import MaskletTable
from vssam2.refine import count_votes


@dataclass(frozen=True)
class ConsistencySampling:
    """Which windows and pixels the cache's window signatures keep (:mod:`vssam2.fusion.consistency`).

    Attributes:
        window: n of the mVC_n kept (8: mVC8, the paper's first).
        stride: every stride-th window (1 = all).
        pixel_step: every pixel_step-th row and column (1 = all; with both 1 the mVC_n of
            any decision is exact, otherwise an estimate on the sample).
    """

    window: int = 8
    stride: int = 1
    pixel_step: int = 1

    def to_dict(self) -> dict[str, int]:
        return {"window": self.window, "stride": self.stride, "pixel_step": self.pixel_step}

    def builder(self) -> SignatureBuilder:
        return SignatureBuilder(self.window, self.stride, self.pixel_step)


def fusion_cache_config(
    data: Any, method: str, statistics: StatisticsConfig, consistency: ConsistencySampling | None = None
) -> dict[str, Any]:
    """What determines a statistics cache (hashed into its folder's key)."""
    if data.masklet_cache is None:
        raise ValueError("the statistics cache describes cached masklets: give the data module a masklet_cache")
    if method not in data.pred_roots:
        raise ValueError(
            f"base method {method!r} is not a prediction folder of the data module (it has {list(data.pred_roots)}); "
            f"add it with --data.init_args.pred_roots '{{{method}: DIR}}'"
        )
    config: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "statistics": statistics.to_dict(),
        "masklets": {"directory": data.masklet_cache.directory.name, "key": data.masklet_cache.key},
        "base_method": method,
        "predictions": str(Path(data.pred_roots[method]).resolve()),
        "layout": data.layout.name,
        "clip_len": int(data.clip_len),
        "num_classes": int(data.num_classes),
        "consistency": (consistency or ConsistencySampling()).to_dict(),
    }
    if statistics.use_probs:
        prob_roots = getattr(data, "prob_roots", None) or {}
        if method not in prob_roots:
            raise ValueError(
                f"use_probs: base method {method!r} has no probability folder; give --data.init_args.prob_roots "
                f"'{{{method}: DIR}}' (docs/probabilities.md)"
            )
        config["probabilities"] = str(Path(prob_roots[method]).resolve())
    return config


class VideoStatistics:
    """One video's cache arrays for one base method, built chunk by chunk."""

    def __init__(self, statistics: StatisticsConfig, consistency: ConsistencySampling | None = None) -> None:
        self.statistics = statistics
        self.parts: list[dict[str, np.ndarray]] = []
        self.rows = 0
        self.signatures = (consistency or ConsistencySampling()).builder()

    def add(
        self,
        segments: torch.Tensor,
        base: torch.Tensor,
        gt: torch.Tensor,
        start: int,
        table: MaskletTable,
        video: str,
        table_origin: str,
        probs: Any = None,
    ) -> MaskletStatistics:
        """Describes one chunk (segments, base and GT are (T, H, W))."""
        config = self.statistics
        counts = count_votes(segments, base, config.num_classes, IGNORE_INDEX)
        inputs = RuleInputs(
            counts, config.num_classes, IGNORE_INDEX, int(base.shape[0]), start, video, table, table_origin, probs
        )
        soft = inputs.soft_votes("the statistics cache (use_probs)") if config.use_probs else None
        stats = masklet_statistics(counts, config, int(base.shape[0]), start, table, soft)
        joint = joint_histogram(segments, base, gt, stats.ids)
        offset = np.where(joint.row.numpy() >= 0, self.rows, 0)
        rows = masklet_rows(segments, stats.ids)
        self.signatures.add(torch.where(rows >= 0, rows + self.rows, rows), base, gt)
        self.parts.append(
            {
                "features": stats.features.numpy().astype(np.float32),
                "candidates": stats.candidates.numpy().astype(np.int16),
                "ids": stats.ids.numpy().astype(np.int32),
                "start": np.full(stats.ids.shape[0], start, dtype=np.int32),
                "area": stats.area.numpy().astype(np.int64),
                "joint_row": joint.row.numpy() + offset,
                "joint_base": joint.base.numpy().astype(np.uint8),
                "joint_gt": joint.gt.numpy().astype(np.uint8),
                "joint_count": joint.count.numpy().astype(np.int64),
            }
        )
        self.rows += int(stats.ids.shape[0])
        return stats

    def arrays(self) -> dict[str, np.ndarray]:
        """The video's arrays, as :meth:`FusionCache.write` stores them."""
        k, width = self.statistics.top_k, len(self.statistics.features)
        empty = {
            "features": np.zeros((0, width), np.float32),
            "candidates": np.zeros((0, k), np.int16),
            "ids": np.zeros(0, np.int32),
            "start": np.zeros(0, np.int32),
            "area": np.zeros(0, np.int64),
            "joint_row": np.zeros(0, np.int64),
            "joint_base": np.zeros(0, np.uint8),
            "joint_gt": np.zeros(0, np.uint8),
            "joint_count": np.zeros(0, np.int64),
        }
        arrays = {name: np.concatenate([p[name] for p in self.parts]) if self.parts else e for name, e in empty.items()}
        return arrays | self.signatures.result().to_arrays()


@dataclass
class FusionRunSummary(FeatureRunSummary):
    """What one rank of a statistics cache run did for one base method."""

    method: str = ""

    def __str__(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"refinement statistics {self.directory} split {self.split!r} (rank {self.rank}/{self.world_size}): "
            f"{len(self.computed)} videos computed ({self.frames} frames, {self.rows} masklet rows, "
            f"{fps:.1f} frames/s), {len(self.skipped)} already done"
        )


def compute_fusion_cache(
    data: Any,
    split: str,
    methods: list[str],
    fusion_root: str | Path = "cache/fusion",
    top_k: int = 3,
    use_probs: bool = False,
    consistency: ConsistencySampling | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> list[FusionRunSummary]:
    """Computes the statistics of one rank's share of a split, for every base method.

    The masklets and ground truth are read once for all methods.

    Args:
        data: a VSPW / VIPSeg data module (:class:`vssam2.datasets.VideoSplits`) with
            ``masklet_cache`` and ``pred_roots`` (and ``prob_roots`` with ``use_probs``).
        split: split to describe.
        methods: base methods (prediction folder names), one cache folder each.
        fusion_root: parent folder of statistics caches.
        top_k: candidate classes per masklet.
        use_probs: add the probability summaries (needs the methods' probability folders).
        consistency: the window signatures' window and sampling (default: mVC8, exact).
        rank: this process's rank (default ``$RANK`` or 0).
        world_size: number of processes (default ``$WORLD_SIZE`` or 1).
        progress: tqdm bar on rank 0.
    """
    env_rank, env_world = rank_from_env()
    rank = env_rank if rank is None else int(rank)
    world_size = env_world if world_size is None else int(world_size)
    if not methods:
        raise ValueError("no base method given: name the prediction folders to describe (--methods)")
    statistics = StatisticsConfig(int(data.num_classes), top_k, use_probs)
    caches = {
        m: FusionCache.create(fusion_root, fusion_cache_config(data, m, statistics, consistency)) for m in methods
    }
    stream = data.eval_dataset(split, rank, world_size)  # this rank's share, with masklets and probabilities
    stream.load_frames = False  # statistics need labels only
    mine = list(stream.videos)
    if not mine and world_size == 1:
        raise DataError(f"split {split!r} of {data.root} has no video", data.root)
    todo = [video for video in mine if not all(cache.is_done(split, video.name) for cache in caches.values())]
    stream.videos = todo
    summaries = {
        m: FusionRunSummary(
            cache.directory,
            split,
            rank,
            world_size,
            skipped=[v.name for v in mine if cache.is_done(split, v.name)],
            method=m,
        )
        for m, cache in caches.items()
    }
    masklets = data.masklet_cache
    bar = tqdm(
        total=sum(v.num_frames for v in todo),
        desc=f"refinement statistics {split}",
        unit="frame",
        disable=not (progress and rank == 0),
    )
    started = time.perf_counter()
    builders: dict[str, VideoStatistics] = {}
    table: MaskletTable | None = None
    try:
        with torch.no_grad():
            for chunk in stream:
                video = chunk["video"]
                if chunk["start"] == 0:
                    table = masklets.read_table(video)
                    builders = {
                        m: VideoStatistics(statistics, consistency)
                        for m in methods
                        if not caches[m].is_done(split, video)
                    }
                for method, builder in builders.items():
                    if method not in chunk["preds"]:
                        raise KeyError(f"chunk of video {video!r} has no predictions of {method!r}")
                    probs = (chunk.get("probs") or {}).get(method)
                    builder.add(
                        chunk["segments"],
                        chunk["preds"][method],
                        chunk["gt"],
                        int(chunk["start"]),
                        table,
                        video,
                        str(masklets.table_path(video)),
                        probs,
                    )
                    summaries[method].frames += len(chunk["frame_ids"])
                bar.update(len(chunk["frame_ids"]))
                if chunk["last"]:
                    for method, builder in builders.items():
                        arrays = builder.arrays()
                        caches[method].write(split, video, arrays)
                        summaries[method].computed.append(video)
                        summaries[method].rows += len(arrays["ids"])
                    builders = {}
    finally:
        bar.close()
        for summary in summaries.values():
            summary.seconds = time.perf_counter() - started
    return list(summaries.values())
