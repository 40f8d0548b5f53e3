"""The masklet feature cache: pooled masklet vectors of a split, computed once per encoder.

The encoder is frozen, so the pooled vector of a masklet (Eq. 3) never changes during
training: computing it once per split turns an epoch from a pass of the image encoder over
every frame into a pass of a small MLP over stored vectors.

Layout: ``<feature_root>/<encoder>-<key>/config.json`` and ``<split>/<video>.npz``, one file
per video, written atomically when the whole video is done (so an interrupted run loses at
most the video in progress, and a rerun skips finished videos). The key hashes everything
that changes the vectors: the encoder's :meth:`describe` (weights fingerprint included), the
masklet cache's configuration, pooling mode and scope, the layout, ``clip_len`` and the
number of classes; another configuration gets another folder, never a stale file.

Each ``.npz`` holds one row per masklet of each chunk (``clip_len`` frames): ``vectors``
(N, C) float16, ``ids``, ``frame`` (−1 when a row spans the chunk), ``start`` (the chunk's
first frame), ``area``, ``target`` (majority GT class, 255 = ignore-only), the sparse GT
histogram of every row (``hist_row``, ``hist_label``, ``hist_count``) and ``uncovered`` (256,)
the GT pixels outside every masklet. The histograms give the exact pixel confusion matrix of
any painting of the masklets, so validation mIoU needs no pixel maps.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vssam2.datasets.streaming import VideoClipStream
from vssam2.errors import DataError
from vssam2.features.extract import encode_frames, extract_clip_masklets
from vssam2.masklets.cache import _atomic_write_bytes, cache_key, rank_from_env, resolve_cache_dir
from vssam2.refine import masklet_targets

CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
ROW_ARRAYS = ("ids", "frame", "start", "area", "target")


def feature_cache_config(
    encoder: Any, data: Any, pooling: str, per_frame: bool
) -> dict[str, Any]:
    """What determines the cached vectors (hashed into the folder's key)."""
    if data.masklet_cache is None:
        raise ValueError("the feature cache pools over cached masklets: give the data module a masklet_cache")
    return {
        "format": FORMAT_VERSION,
        "encoder": encoder.describe(),
        "masklets": {"directory": data.masklet_cache.directory.name, "key": data.masklet_cache.key},
        "pooling": pooling,
        "per_frame": bool(per_frame),
        "layout": data.layout.name,
        "clip_len": int(data.clip_len),
        "num_classes": int(data.num_classes),
    }


class FeatureCache:
    """One feature cache folder ``<feature_root>/<encoder>-<key>/``.

    Args:
        directory: the folder.
        config: its configuration (``config.json`` without the key).
    """

    def __init__(self, directory: str | Path, config: Mapping[str, Any]) -> None:
        self.directory = Path(directory)
        self.config = dict(config)
        self.key = cache_key(self.config)

    @classmethod
    def create(cls, feature_root: str | Path, config: Mapping[str, Any]) -> FeatureCache:
        """The folder of ``config`` under ``feature_root``, created with its ``config.json``."""
        key = cache_key(config)
        name = str(config["encoder"].get("class", "encoder")).lower()
        directory = Path(feature_root) / f"{name}-{key}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_FILE
        if path.exists():
            return open_feature_cache(directory)
        text = json.dumps({"key": key, **config}, indent=2, sort_keys=True) + "\n"
        _atomic_write_bytes(path, text.encode())
        return cls(directory, config)

    def video_path(self, split: str, video: str) -> Path:
        """``<cache>/<split>/<video>.npz``."""
        return self.directory / split / f"{video}.npz"

    def is_done(self, split: str, video: str) -> bool:
        """True when the video's file exists (it is written only once complete)."""
        return self.video_path(split, video).is_file()

    def write(self, split: str, video: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Writes one video's rows atomically."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        path = self.video_path(split, video)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(path, buffer.getvalue())

    def read(self, split: str, video: str) -> dict[str, np.ndarray]:
        """One video's arrays.

        Raises:
            DataError: naming the file when it is missing or unreadable.
        """
        path = self.video_path(split, video)
        if not path.is_file():
            raise DataError(
                f"feature cache {self.directory}: video {video!r} of split {split!r} is missing ({path}); "
                "build it with `python -m vssam2.features --config ...` (finished videos are skipped)",
                path,
            )
        try:
            with np.load(path) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except Exception as error:  # zipfile / pickle / value errors for damaged files
            raise DataError(f"{path}: unreadable feature cache file ({type(error).__name__}: {error})", path) from error
        missing = [name for name in ("vectors", *ROW_ARRAYS, "hist_row", "hist_label", "hist_count", "uncovered") if name not in arrays]
        if missing:
            raise DataError(f"{path}: feature cache file lacks arrays {missing}", path)
        return arrays

    def check_split(self, split: str, videos: list[str]) -> None:
        """Raises DataError naming the first missing video file (and how many are missing)."""
        missing = [video for video in videos if not self.is_done(split, video)]
        if missing:
            raise DataError(
                f"feature cache {self.directory}: {len(missing)} of {len(videos)} videos of split {split!r} are "
                f"missing, e.g. {self.video_path(split, missing[0])}; build them with `python -m vssam2.features "
                "--config ...`",
                self.video_path(split, missing[0]),
            )


def open_feature_cache(directory: str | Path) -> FeatureCache:
    """Opens a feature cache folder for reading, checking ``config.json`` against the folder's key.

    Args:
        directory: ``<feature_root>/<encoder>-<key>``, or a glob pattern matching one folder.

    Raises:
        DataError: naming the folder when it or its ``config.json`` is missing, corrupt, or of
            another key (a renamed or stale folder).
    """
    directory = resolve_cache_dir(directory, "feature cache")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise DataError(
            f"feature cache {directory}: {path} not found; build the cache with `python -m vssam2.features --config ...`",
            path,
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: corrupt feature cache config ({error})", path) from error
    key = config.pop("key", None)
    cache = FeatureCache(directory, config)
    if key != cache.key or not directory.name.endswith(f"-{cache.key}"):
        raise DataError(
            f"feature cache {directory}: {path} does not hash to the folder's key (stored {key!r}, computed "
            f"{cache.key!r}); the folder was edited or renamed — rebuild it",
            path,
        )
    return cache


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
        np.concatenate([part["hist_row"] + offset for part, offset in zip(parts, offsets)]) if parts else np.zeros(0, np.int64)
    )
    out["uncovered"] = uncovered
    return out


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
    pooling: str = "bilinear",
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
    summary = FeatureRunSummary(cache.directory, split, rank, world_size, skipped=[v.name for v in mine if v not in todo])
    data.masklet_cache.check_videos([video.name for video in todo])
    stream = VideoClipStream(
        todo, layout=data.layout, clip_len=data.clip_len, num_classes=data.num_classes, masklet_cache=data.masklet_cache
    )
    show = progress and rank == 0
    bar = tqdm(total=sum(v.num_frames for v in todo), desc=f"features {split}", unit="frame", disable=not show)
    started = time.perf_counter()
    parts: list[dict[str, np.ndarray]] = []
    uncovered = np.zeros(256, dtype=np.int64)
    channels = int(getattr(encoder, "out_channels", 0))
    try:
        with torch.no_grad():
            for chunk in stream:
                features = encode_frames(encoder, chunk["frames"], encoder_batch_size, device)  # (T, C, h, w)
                masklets = extract_clip_masklets(
                    features, chunk["segments"], chunk["gt"], pooling, per_frame, data.num_classes
                )
                parts.append(clip_rows(masklets, chunk["start"], data.num_classes))
                outside = chunk["gt"][torch.as_tensor(chunk["segments"]) == 0]
                uncovered += np.bincount(outside.numpy().reshape(-1), minlength=256)
                bar.update(len(chunk["frame_ids"]))
                summary.frames += len(chunk["frame_ids"])
                if chunk["last"]:
                    arrays = concat_rows(parts, uncovered, channels)
                    cache.write(split, chunk["video"], arrays)
                    summary.computed.append(chunk["video"])
                    summary.rows += len(arrays["ids"])
                    parts, uncovered = [], np.zeros(256, dtype=np.int64)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - started
    return summary

