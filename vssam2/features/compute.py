"""Computing the pooled masklet vectors of a split into the feature cache (:mod:`vssam2.features.cache`).

``python -m vssam2.features`` runs :func:`compute_feature_cache` on one rank's share of a
split (whole videos, sharded as evaluation shards them); finished videos are skipped, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vssam2.datasets.streaming import VideoClipStream, rank_from_env
from vssam2.errors import DataError
from vssam2.features.cache import FeatureCache, feature_cache_config
from vssam2.features.extract import encode_frames, extract_clip_masklets
from vssam2.pooling import PoolingMode
from vssam2.refine import masklet_targets


def clip_rows(masklets: Any, start: int, num_classes: int) -> dict[str, np.ndarray]:
    """One chunk's rows in cache form (see the module docstring)."""
    hist = masklets.hist  # (N, 256) int64
    row, label = torch.nonzero(hist, as_tuple=True)
    return {
        "vectors": masklets.vectors.cpu().numpy().astype(np.float16),
        "ids": masklets.ids.cpu().numpy().astype(np.int32),
        "frame": masklets.frame.cpu().numpy().astype(np.int32),
        "start": np.full(masklets.ids.shape[0], start, dtype=np.int32),
        "area": masklets.area.cpu().numpy().astype(np.int64),
        "target": masklet_targets(hist, num_classes).numpy().astype(np.uint8),
        "hist_row": row.numpy().astype(np.int64),
        "hist_label": label.numpy().astype(np.uint8),
        "hist_count": hist[row, label].numpy().astype(np.int64),
    }


def concat_rows(parts: list[dict[str, np.ndarray]], uncovered: np.ndarray, channels: int) -> dict[str, np.ndarray]:
    """Concatenates chunk rows into one video's arrays (histogram rows re-indexed)."""
    out: dict[str, np.ndarray] = {}
    offsets = np.cumsum([0] + [len(part["ids"]) for part in parts])
    for name in ("ids", "frame", "start", "area", "target", "hist_label", "hist_count"):
        out[name] = np.concatenate([part[name] for part in parts]) if parts else np.zeros(0, np.int64)
    out["vectors"] = np.concatenate([p["vectors"] for p in parts]) if parts else np.zeros((0, channels), np.float16)
    out["hist_row"] = (
        np.concatenate([part["hist_row"] + offset for part, offset in zip(parts, offsets)])
        if parts
        else np.zeros(0, np.int64)
    )
    out["uncovered"] = uncovered
    return out


class VideoRows:
    """One video's cache arrays, built chunk by chunk (the one place rows are made from features).

    Both routes to the feature cache feed it: :func:`compute_feature_cache` (the encoder over
    cached masklets) and the masklet pass that pools as it goes
    (:mod:`vssam2.features.one_pass`), so their files cannot differ in anything but the
    features themselves.

    Args:
        num_classes: evaluation classes (GT ids above are ignore).
        channels: feature channels (the shape of ``vectors`` when the video has no masklet).
        pooling: feature upsampling of :func:`vssam2.pooling.masked_average_pool`.
        per_frame: one row per (frame, masklet) instead of per masklet of a chunk.
    """

    def __init__(self, num_classes: int, channels: int, pooling: PoolingMode, per_frame: bool) -> None:
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.pooling: PoolingMode = pooling
        self.per_frame = bool(per_frame)
        self.parts: list[dict[str, np.ndarray]] = []
        self.uncovered = np.zeros(256, dtype=np.int64)

    def add(self, features: torch.Tensor, segments: torch.Tensor, gt: torch.Tensor, start: int) -> None:
        """Pools one chunk.

        Args:
            features: (T, C, h, w) float32 features of the chunk's frames.
            segments: (T, H, W) int segment maps, 0 = no masklet.
            gt: (T, H, W) uint8 GT ids.
            start: the chunk's first frame in the video.
        """
        masklets = extract_clip_masklets(features, segments, gt, self.pooling, self.per_frame, self.num_classes)
        self.parts.append(clip_rows(masklets, start, self.num_classes))
        outside = gt[torch.as_tensor(segments).cpu() == 0]
        self.uncovered += np.bincount(outside.numpy().reshape(-1), minlength=256)

    def arrays(self) -> dict[str, np.ndarray]:
        """The video's arrays, as :meth:`FeatureCache.write` stores them."""
        return concat_rows(self.parts, self.uncovered, self.channels)


@dataclass
class FeatureRunSummary:
    """What one rank of a feature cache run did."""

    directory: Path
    split: str
    rank: int
    world_size: int
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    frames: int = 0
    rows: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"feature cache {self.directory} split {self.split!r} (rank {self.rank}/{self.world_size}): "
            f"{len(self.computed)} videos computed ({self.frames} frames, {self.rows} masklet vectors, "
            f"{fps:.2f} frames/s), {len(self.skipped)} already done"
        )


def compute_feature_cache(
    encoder: torch.nn.Module,
    data: Any,
    split: str,
    feature_root: str | Path = "cache/features",
    pooling: PoolingMode = "bilinear",
    per_frame: bool = False,
    encoder_batch_size: int = 8,
    device: str | torch.device | None = None,
    max_videos: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> FeatureRunSummary:
    """Computes the pooled masklet vectors of one rank's share of a split.

    Videos are sharded across ranks exactly as evaluation shards them (whole videos,
    balanced by frames); finished videos are skipped.

    Args:
        encoder: a frozen encoder (:class:`vssam2.encoders.FrozenEncoder`).
        data: a VSPW / VIPSeg data module with ``masklet_cache`` set.
        split: split to compute.
        feature_root: parent folder of feature cache folders.
        pooling: "bilinear" or "nearest" (see :func:`vssam2.pooling.masked_average_pool`).
        per_frame: one row per (frame, masklet) instead of per masklet of a chunk.
        encoder_batch_size: frames per encoder call.
        device: where the encoder runs (default: CUDA ``LOCAL_RANK`` if available, else CPU).
        max_videos: only the first videos of the split (before sharding).
        rank: this process's rank (default ``$RANK`` or 0).
        world_size: number of processes (default ``$WORLD_SIZE`` or 1).
        progress: tqdm bars on rank 0.
    """
    env_rank, env_world = rank_from_env()
    rank = env_rank if rank is None else int(rank)
    world_size = env_world if world_size is None else int(world_size)
    if device is None:
        local = int(os.environ.get("LOCAL_RANK", 0))
        device = f"cuda:{local % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    encoder = encoder.to(device)
    cache = FeatureCache.create(feature_root, feature_cache_config(encoder, data, pooling, per_frame))
    videos = list(data.index(split, with_preds=False).videos)[:max_videos]
    if not videos:
        raise DataError(f"split {split!r} of {data.root} has no video", data.root)
    mine = VideoClipStream(videos, layout=data.layout, clip_len=data.clip_len, rank=rank, world_size=world_size).videos
    todo = [video for video in mine if not cache.is_done(split, video.name)]
    summary = FeatureRunSummary(
        cache.directory, split, rank, world_size, skipped=[v.name for v in mine if v not in todo]
    )
    data.masklet_cache.check_videos([video.name for video in todo])
    stream = VideoClipStream(
        todo, layout=data.layout, clip_len=data.clip_len, num_classes=data.num_classes, masklet_cache=data.masklet_cache
    )
    show = progress and rank == 0
    bar = tqdm(total=sum(v.num_frames for v in todo), desc=f"features {split}", unit="frame", disable=not show)
    started = time.perf_counter()
    channels = int(getattr(encoder, "out_channels", 0))
    rows = VideoRows(data.num_classes, channels, pooling, per_frame)
    try:
        with torch.no_grad():
            for chunk in stream:
                features = encode_frames(encoder, chunk["frames"], encoder_batch_size, device)  # (T, C, h, w)
                rows.add(features, chunk["segments"], chunk["gt"], chunk["start"])
                bar.update(len(chunk["frame_ids"]))
                summary.frames += len(chunk["frame_ids"])
                if chunk["last"]:
                    arrays = rows.arrays()
                    cache.write(split, chunk["video"], arrays)
                    summary.computed.append(chunk["video"])
                    summary.rows += len(arrays["ids"])
                    rows = VideoRows(data.num_classes, channels, pooling, per_frame)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - started
    return summary
