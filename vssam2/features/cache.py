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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vssam2.atomic import atomic_write_bytes
from vssam2.errors import DataError
from vssam2.masklets.cache import cache_key, resolve_cache_dir

CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
ROW_ARRAYS = ("ids", "frame", "start", "area", "target")


def feature_cache_config(encoder: Any, data: Any, pooling: str, per_frame: bool) -> dict[str, Any]:
    """What determines the cached vectors (hashed into the folder's key)."""
    if data.masklet_cache is None:
        raise ValueError("the feature cache pools over cached masklets: give the data module a masklet_cache")
    if getattr(encoder, "trainable", False):
        raise ValueError(
            f"{type(encoder).__name__} trains adapters, so its features change during training and the feature "
            "cache cannot hold them: train it online on clips (data.masklet_cache without data.feature_cache)"
        )
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

    #: What the folder is, in messages.
    KIND: str = "feature cache"
    #: The command that builds it, in messages.
    BUILD: str = "python -m vssam2.features --config ..."
    #: Arrays every video file must hold.
    REQUIRED: tuple[str, ...] = ("vectors", *ROW_ARRAYS, "hist_row", "hist_label", "hist_count", "uncovered")

    def __init__(self, directory: str | Path, config: Mapping[str, Any]) -> None:
        self.directory = Path(directory)
        self.config = dict(config)
        self.key = cache_key(self.config)

    @classmethod
    def create(cls, feature_root: str | Path, config: Mapping[str, Any]) -> FeatureCache:
        """The folder of ``config`` under ``feature_root``, created with its ``config.json``."""
        key = cache_key(config)
        directory = Path(feature_root) / f"{cls.folder_name(config)}-{key}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_FILE
        if path.exists():
            return open_feature_cache(directory, cls)
        text = json.dumps({"key": key, **config}, indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(path, text.encode())
        return cls(directory, config)

    @staticmethod
    def folder_name(config: Mapping[str, Any]) -> str:
        """The folder's name before its key: the encoder's class."""
        return str(config["encoder"].get("class", "encoder")).lower()

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
        atomic_write_bytes(path, buffer.getvalue())

    def read(self, split: str, video: str) -> dict[str, np.ndarray]:
        """One video's arrays.

        Raises:
            DataError: naming the file when it is missing or unreadable.
        """
        path = self.video_path(split, video)
        if not path.is_file():
            raise DataError(
                f"{self.KIND} {self.directory}: video {video!r} of split {split!r} is missing ({path}); "
                f"build it with `{self.BUILD}` (finished videos are skipped)",
                path,
            )
        try:
            with np.load(path) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except Exception as error:  # zipfile / pickle / value errors for damaged files
            raise DataError(f"{path}: unreadable {self.KIND} file ({type(error).__name__}: {error})", path) from error
        missing = [name for name in self.REQUIRED if name not in arrays]
        if missing:
            raise DataError(f"{path}: {self.KIND} file lacks arrays {missing}", path)
        return arrays

    def check_split(self, split: str, videos: list[str]) -> None:
        """Raises DataError naming the first missing video file (and how many are missing)."""
        missing = [video for video in videos if not self.is_done(split, video)]
        if missing:
            raise DataError(
                f"{self.KIND} {self.directory}: {len(missing)} of {len(videos)} videos of split {split!r} are "
                f"missing, e.g. {self.video_path(split, missing[0])}; build them with `{self.BUILD}`",
                self.video_path(split, missing[0]),
            )


def open_feature_cache(directory: str | Path, cache_class: type[FeatureCache] = FeatureCache) -> FeatureCache:
    """Opens a cache folder for reading, checking ``config.json`` against the folder's key.

    Args:
        directory: ``<feature_root>/<encoder>-<key>``, or a glob pattern matching one folder.
        cache_class: the kind of cache (:class:`FeatureCache`, or a subclass such as the
            refinement statistics cache).

    Raises:
        DataError: naming the folder when it or its ``config.json`` is missing, corrupt, or of
            another key (a renamed or stale folder).
    """
    directory = resolve_cache_dir(directory, cache_class.KIND)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise DataError(
            f"{cache_class.KIND} {directory}: {path} not found; build the cache with `{cache_class.BUILD}`",
            path,
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: corrupt {cache_class.KIND} config ({error})", path) from error
    key = config.pop("key", None)
    cache = cache_class(directory, config)
    if key != cache.key or not directory.name.endswith(f"-{cache.key}"):
        raise DataError(
            f"{cache_class.KIND} {directory}: {path} does not hash to the folder's key (stored {key!r}, computed "
            f"{cache.key!r}); the folder was edited or renamed — rebuild it",
            path,
        )
    return cache
