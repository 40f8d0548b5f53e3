"""The masklet cache: segment maps as 16-bit PNGs, keyed by the masklet configuration.

Computing masklets (SAM2 above all) costs far more than anything downstream, so the maps of a
split are computed once (``python -m vssam2.masklets --config ...``) and read back by the
refiner, the pooling and the data modules (``VSPWDataModule(masklet_cache=...)``).

Layout (one folder per configuration)::

    <cache_root>/<source.name>-<key>/
        config.json                 the configuration the key hashes (human-readable)
        <video>/<frame>.png         segment map, uint16 PNG (PIL mode "I;16"), 0 = no masklet
        <video>/masklets.json       the video's score table (MaskletTable.to_json)
        <video>/.done               completion marker, written last (JSON: key, frames, size)

``key`` is the first 12 hex digits of the SHA-256 of the canonical JSON of
:func:`cache_config`: the source's name and :meth:`MaskletSource.config`, the dataset layout,
the number of classes and the chunk length the source was fed with. Changing any parameter
that changes the output therefore changes the folder: a stale cache is never read.

Writes are atomic (temporary name in the same folder, then :func:`os.replace`) and ``.done``
is written after everything else, so a video either has ``.done`` and all its files, or it is
recomputed from scratch on the next run (its folder is cleared first).
"""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vssam2.atomic import atomic_write_bytes, atomic_write_png
from vssam2.errors import DataError
from vssam2.masklets.base import MaskletSource, MaskletTable

#: Version of the on-disk format; part of the key, so a format change never reads old files.
CACHE_FORMAT = 1
#: Largest masklet id a 16-bit PNG holds.
MAX_SEGMENT_ID = 65535
CONFIG_FILE = "config.json"
TABLE_FILE = "masklets.json"
DONE_FILE = ".done"
FRAME_SUFFIX = ".png"
KEY_LENGTH = 12


# --------------------------------------------------------------------------------- the key


def _jsonable(value: Any) -> Any:
    """Turns config values JSON does not know (paths, numpy scalars, tensors, sets) into JSON."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, torch.dtype):
        return str(value)
    raise TypeError(f"masklet configuration value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def canonical_json(config: Mapping[str, Any]) -> str:
    """Canonical JSON (sorted keys, no whitespace, tuples as lists): the text the key hashes."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_jsonable, allow_nan=True)
    # Round trip so that tuples/lists and numpy/python scalars hash the same.
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def cache_key(config: Mapping[str, Any]) -> str:
    """Short stable hash of a cache configuration: first 12 hex digits of SHA-256."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:KEY_LENGTH]


def cache_config(
    source: MaskletSource, layout: str, clip_len: int, num_classes: int, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Everything that determines the cached maps.

    Args:
        source: the masklet source (its ``name`` and ``config()``).
        layout: dataset layout name (``"VSPW"``, ``"VIPSeg"``).
        clip_len: frames per chunk the source is fed with (a source may depend on chunking).
        num_classes: number of evaluation classes (ground-truth decoding, oracle sources).
        extra: anything else that changes the maps (e.g. a resize), merged under ``"extra"``.

    Returns:
        A JSON-able dict; :func:`cache_key` hashes it.
    """
    config: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "source": {"name": source.name, "config": json.loads(canonical_json(source.config()))},
        "data": {"layout": layout, "clip_len": int(clip_len), "num_classes": int(num_classes)},
    }
    if extra:
        config["extra"] = json.loads(canonical_json(extra))
    return config


# ---------------------------------------------------------------------------- file helpers


def to_uint16(segments: np.ndarray | torch.Tensor, what: str = "segment map") -> np.ndarray:
    """Checks that ids fit 16 bits (0…65535) and converts.

    Raises:
        ValueError: naming the largest (or negative) id and ``what``.
    """
    array = segments.numpy() if isinstance(segments, torch.Tensor) else np.asarray(segments)
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0:
            raise ValueError(f"{what}: negative masklet id {low}; segment maps hold ids >= 0 (0 = no masklet)")
        if high > MAX_SEGMENT_ID:
            raise ValueError(
                f"{what}: masklet id {high} does not fit the cache's 16-bit PNGs (at most {MAX_SEGMENT_ID} "
                "masklets per video); use fewer masklets (coarser grid, stricter thresholds) for this video"
            )
    return array.astype(np.uint16)


# ------------------------------------------------------------------------------ the cache


class MaskletCache:
    """One cache folder ``<root>/<source_name>-<key>/``: reading, writing, completion.

    Create one for writing with :meth:`create` (writes ``config.json``) and for reading with
    :func:`open_cache` (checks ``config.json`` against the key). Instances are small and
    picklable (DataLoader workers read through them).

    Args:
        directory: the cache folder.
        key: the configuration key the folder must hold.
    """

    def __init__(self, directory: str | Path, key: str) -> None:
        self.directory = Path(directory)
        self.key = key
        self.config: dict[str, Any] = {}
        self._complete: set[str] = set()  # videos whose .done was checked (per process)

    # ----------------------------------------------------------------------- construction

    @classmethod
    def directory_for(cls, cache_root: str | Path, source_name: str, key: str) -> Path:
        """``<cache_root>/<source_name>-<key>``."""
        return Path(cache_root) / f"{source_name}-{key}"

    @classmethod
    def create(cls, cache_root: str | Path, config: Mapping[str, Any]) -> MaskletCache:
        """The cache folder of ``config`` under ``cache_root``, created with its ``config.json``.

        Safe to call from every rank at once: each writes the same file atomically.

        Raises:
            DataError: if the folder holds a ``config.json`` of another configuration.
        """
        key = cache_key(config)
        directory = cls.directory_for(cache_root, config["source"]["name"], key)
        directory.mkdir(parents=True, exist_ok=True)
        config_path = directory / CONFIG_FILE
        if config_path.exists():
            cache = open_cache(directory, key)  # raises if stale or corrupt
        else:
            text = json.dumps({"key": key, **config}, indent=2, sort_keys=True) + "\n"
            atomic_write_bytes(config_path, text.encode())
            cache = cls(directory, key)
            cache.config = dict(config)
        return cache

    # ---------------------------------------------------------------------------- paths

    def video_dir(self, video: str) -> Path:
        """Folder of one video's maps."""
        return self.directory / video

    def frame_path(self, video: str, frame_id: str) -> Path:
        """``<cache>/<video>/<frame>.png``."""
        return self.directory / video / f"{frame_id}{FRAME_SUFFIX}"

    def done_path(self, video: str) -> Path:
        """Completion marker of a video."""
        return self.directory / video / DONE_FILE

    def table_path(self, video: str) -> Path:
        """Score table of a video."""
        return self.directory / video / TABLE_FILE

    # ------------------------------------------------------------------------ completion

    def done_info(self, video: str) -> dict[str, Any] | None:
        """The ``.done`` record of a video (key, frame ids, size, masklets) or None if absent."""
        path = self.done_path(video)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: corrupt completion marker ({error})", path) from error

    def is_done(self, video: str) -> bool:
        """True when the video was computed completely under this cache's key."""
        info = self.done_info(video)
        return info is not None and info.get("key") == self.key

    def check_video(self, video: str) -> dict[str, Any]:
        """The ``.done`` record of a complete video.

        Raises:
            DataError: naming the marker when the video is missing or incomplete, or was
                computed under another key (stale).
        """
        path = self.done_path(video)
        info = self.done_info(video)
        if info is None:
            state = "is incomplete (interrupted run)" if self.video_dir(video).is_dir() else "is not in the cache"
            raise DataError(
                f"masklet cache {self.directory}: video {video!r} {state}: {path} is missing; compute it with "
                f"`python -m vssam2.masklets --config ...` (finished videos are skipped)",
                path,
            )
        if info.get("key") != self.key:
            raise DataError(
                f"masklet cache {self.directory}: video {video!r} is stale: {path} was written under key "
                f"{info.get('key')!r}, the cache's key is {self.key!r}; delete {self.video_dir(video)} and recompute",
                path,
            )
        self._complete.add(video)
        return info

    def check_videos(self, videos: Sequence[str]) -> None:
        """Checks that every video is complete (one small file read each).

        Raises:
            DataError: naming the first incomplete video's marker and how many are missing.
        """
        bad: list[DataError] = []
        for video in videos:
            try:
                self.check_video(video)
            except DataError as error:
                bad.append(error)
        if bad:
            more = f" (and {len(bad) - 1} more of {len(videos)} videos)" if len(bad) > 1 else ""
            raise DataError(f"{bad[0]}{more}", bad[0].path) from bad[0]

    # ---------------------------------------------------------------------------- reading

    def read_frame(self, video: str, frame_id: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """One cached map: (H, W) int32.

        Raises:
            DataError: naming the file when it is missing, undecodable, not 16-bit single
                channel, or not of ``size`` (height, width).
        """
        path = self.frame_path(video, frame_id)
        try:
            with Image.open(path) as image:
                image.load()
                array = np.asarray(image)
        except FileNotFoundError as error:
            raise DataError(f"masklet cache: {path} is missing (video {video!r}, frame {frame_id!r})", path) from error
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... on bad files
            raise DataError(f"masklet cache: cannot decode {path} ({type(error).__name__}: {error})", path) from error
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise DataError(
                f"masklet cache: {path} must be a single-channel 16-bit PNG, got shape {array.shape} "
                f"dtype {array.dtype}",
                path,
            )
        if size is not None and tuple(array.shape) != tuple(size):
            raise DataError(
                f"masklet cache: size mismatch: {path} is {array.shape[0]}x{array.shape[1]} (HxW) but the "
                f"video's frames are {size[0]}x{size[1]}",
                path,
            )
        return array.astype(np.int32)

    def read_segments(self, video: str, frame_ids: Sequence[str], size: tuple[int, int] | None = None) -> torch.Tensor:
        """Cached maps of some frames of a complete video: (T, H, W) int32.

        Raises:
            DataError: naming the file on a missing / stale video or a missing / bad frame.
        """
        if video not in self._complete:
            self.check_video(video)
        maps = [self.read_frame(video, frame_id, size) for frame_id in frame_ids]
        if size is None and maps:
            size = maps[0].shape
            for frame_id, array in zip(frame_ids, maps):
                if array.shape != size:
                    path = self.frame_path(video, frame_id)
                    raise DataError(
                        f"masklet cache: size mismatch: {path} is {array.shape[0]}x{array.shape[1]} but "
                        f"{self.frame_path(video, frame_ids[0])} is {size[0]}x{size[1]}",
                        path,
                    )
        if not maps:
            return torch.zeros((0, *(size or (0, 0))), dtype=torch.int32)
        return torch.from_numpy(np.stack(maps))

    def read_video(self, video: str) -> tuple[torch.Tensor, MaskletTable]:
        """A whole complete video: ((T, H, W) int32 maps in frame order, score table)."""
        info = self.check_video(video)
        size = (int(info["height"]), int(info["width"]))
        return self.read_segments(video, info["frame_ids"], size), self.read_table(video)

    def read_table(self, video: str) -> MaskletTable:
        """The score table of a complete video."""
        if video not in self._complete:
            self.check_video(video)
        path = self.table_path(video)
        try:
            return MaskletTable.from_json(path.read_text())
        except FileNotFoundError as error:
            raise DataError(f"masklet cache: {path} is missing", path) from error
        except (ValueError, TypeError) as error:
            raise DataError(f"masklet cache: corrupt score table {path} ({error})", path) from error

    def videos(self) -> list[str]:
        """Complete videos in the cache (sorted)."""
        if not self.directory.is_dir():
            return []
        return sorted(entry.name for entry in self.directory.iterdir() if entry.is_dir() and self.is_done(entry.name))

    # ---------------------------------------------------------------------------- writing

    def writer(self, video: str, height: int, width: int) -> VideoWriter:
        """Starts (re)writing a video: clears its folder; ``.done`` comes with :meth:`VideoWriter.finish`."""
        return VideoWriter(self, video, height, width)


class VideoWriter:
    """Writes one video's maps frame by frame, then its table and (last) its ``.done`` marker.

    Construction clears whatever an interrupted run left in the video's folder.
    """

    def __init__(self, cache: MaskletCache, video: str, height: int, width: int) -> None:
        self.cache = cache
        self.video = video
        self.size = (int(height), int(width))
        self.frame_ids: list[str] = []
        self.folder = cache.video_dir(video)
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)

    def write(self, frame_ids: Sequence[str], segments: torch.Tensor | np.ndarray) -> None:
        """Writes a chunk of maps: (T, H, W) ids 0…65535, one PNG per frame id."""
        if len(segments) != len(frame_ids):
            raise ValueError(f"{len(frame_ids)} frame ids for {len(segments)} maps")
        array = to_uint16(segments, f"video {self.video!r}, frames {frame_ids[0]}…{frame_ids[-1]}" if frame_ids else "")
        if array.shape[1:] != self.size:
            raise ValueError(f"video {self.video!r}: maps of size {array.shape[1:]}, expected {self.size}")
        for frame_id, frame in zip(frame_ids, array):
            atomic_write_png(self.cache.frame_path(self.video, frame_id), frame)
        self.frame_ids.extend(frame_ids)

    def finish(self, table: MaskletTable) -> None:
        """Writes the score table, then the completion marker (last)."""
        atomic_write_bytes(self.cache.table_path(self.video), table.to_json().encode())
        done = {
            "key": self.cache.key,
            "video": self.video,
            "num_frames": len(self.frame_ids),
            "height": self.size[0],
            "width": self.size[1],
            "num_masklets": len(table),
            "frame_ids": self.frame_ids,
        }
        atomic_write_bytes(self.cache.done_path(self.video), json.dumps(done).encode())
        self.cache._complete.add(self.video)


def resolve_cache_dir(directory: str | Path, what: str) -> Path:
    """A cache folder given by path or by a glob pattern matching exactly one folder.

    Cache folder names end with a configuration hash, which configs cannot know in advance:
    ``cache/masklets/superpixel-*`` names "the superpixel cache" as long as there is one.

    Raises:
        DataError: when a pattern matches no folder, or several (listing them).
    """
    text = str(directory)
    if not glob.has_magic(text):
        return Path(directory)
    matches = sorted(Path(p) for p in glob.glob(text) if Path(p).is_dir())
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DataError(f"{what} {text}: no folder matches this pattern (compute the cache first)", Path(text))
    listed = "\n  ".join(str(m) for m in matches)
    raise DataError(
        f"{what} {text}: {len(matches)} folders match (one per configuration); name one of them:\n  {listed}",
        Path(text),
    )


def open_cache(directory: str | Path, key: str | None = None) -> MaskletCache:
    """Opens a cache folder for reading, checking its ``config.json``.

    Args:
        directory: ``<cache_root>/<source>-<key>``, or a glob pattern matching one folder
            (e.g. ``<cache_root>/superpixel-*``).
        key: the key expected (from :func:`cache_key` of the current configuration). None:
            the key the folder name ends with.

    Raises:
        DataError: naming the folder when ``config.json`` is missing or corrupt, or when its
            configuration hashes to another key than the expected one (a stale cache).
    """
    directory = resolve_cache_dir(directory, "masklet cache")
    config_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise DataError(f"masklet cache {directory} does not exist", directory)
    try:
        stored = json.loads(config_path.read_text())
    except FileNotFoundError as error:
        raise DataError(
            f"masklet cache {directory}: {config_path} is missing (not a cache folder made by "
            "`python -m vssam2.masklets`?)",
            config_path,
        ) from error
    except json.JSONDecodeError as error:
        raise DataError(f"masklet cache {directory}: corrupt {config_path} ({error})", config_path) from error
    config = {name: value for name, value in stored.items() if name != "key"}
    actual = cache_key(config)
    name_key = directory.name.rsplit("-", 1)[-1]
    expected = key if key is not None else name_key
    if actual != expected or stored.get("key") != actual:
        raise DataError(
            f"masklet cache {directory} is stale: its {CONFIG_FILE} hashes to key {actual!r} "
            f"(recorded {stored.get('key')!r}) but key {expected!r} is expected; the masklet configuration "
            "changed: recompute with `python -m vssam2.masklets --config ...` (it writes a new folder)",
            directory,
        )
    cache = MaskletCache(directory, actual)
    cache.config = config
    return cache
