"""The masklet-source interface: frames of a video in, segment maps + a score table out.

The **segment map** is the one currency between stages (docs/design.md): one int32 id per pixel per
frame, 0 where no masklet covers the pixel, the same id for the same tracked object across the
frames it is tracked in. Every source streams a video chunk by chunk, in frame order::

    source.begin_video("video_000", height, width)
    for chunk in chunks:                       # consecutive frames, in order
        segments = source.add_chunk(chunk.frames, chunk.start, gt=chunk.gt)  # (T, H, W) int32
    table = source.end_video()                 # one row per masklet id

The score table travels beside the maps (and into the cache): id, predicted IoU, stability
score, area (pixels over all frames), first and last frame, and the class label of the text
prompt that found the masklet (−1 for class-agnostic sources: all but SAM 3).
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

TABLE_COLUMNS: tuple[str, ...] = ("id", "predicted_iou", "stability", "area", "first_frame", "last_frame", "label")
#: Class label of a masklet no text prompt produced (every class-agnostic source).
NO_LABEL: int = -1
#: Columns added after masklet caches were first written, with the value a table that lacks them
#: (an older ``masklets.json``) gets in every row.
OPTIONAL_COLUMNS: dict[str, int] = {"label": NO_LABEL}


@dataclass
class MaskletTable:
    """Per-masklet scores of one video; every column is a 1-D numpy array of the same length.

    ``predicted_iou`` and ``stability`` are NaN for sources that have no such score
    (superpixels, oracle). ``label`` is the class id of the text prompt that produced the
    masklet (SAM 3), :data:`NO_LABEL` (−1) for class-agnostic sources; left out (None), every
    row gets −1, so tables built column by column without it stay valid.
    """

    id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    predicted_iou: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    stability: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    area: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    first_frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    last_frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    label: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.label is None:
            self.label = np.full(len(self.id), NO_LABEL, np.int64)
        else:
            self.label = np.asarray(self.label, dtype=np.int64)
            if self.label.shape != (len(self.id),):
                raise ValueError(f"masklet table: label column of shape {self.label.shape} for {len(self.id)} masklets")

    def __len__(self) -> int:
        return len(self.id)

    def to_json(self) -> str:
        """JSON with one list per column (NaN → null)."""
        data = {}
        for name in TABLE_COLUMNS:
            column = getattr(self, name)
            data[name] = [None if isinstance(v, float) and np.isnan(v) else v for v in column.tolist()]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> MaskletTable:
        """Inverse of :meth:`to_json`; also reads tables written before a column of
        :data:`OPTIONAL_COLUMNS` existed (that column gets its default in every row).

        Raises:
            ValueError: on a missing required column or columns of different lengths.
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"masklet table is a JSON {type(data).__name__}, not an object of columns")
        missing = [name for name in TABLE_COLUMNS if name not in data and name not in OPTIONAL_COLUMNS]
        if missing:
            raise ValueError(f"masklet table lacks columns {missing}")
        lengths = {name: len(data[name]) for name in TABLE_COLUMNS if name in data}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"masklet table columns differ in length: {lengths}")
        rows = lengths["id"]
        floats = {"predicted_iou", "stability"}
        return cls(
            **{
                name: np.array(
                    [np.nan if v is None else v for v in data[name]]
                    if name in data
                    else [OPTIONAL_COLUMNS[name]] * rows,
                    dtype=np.float64 if name in floats else np.int64,
                )
                for name in TABLE_COLUMNS
            }
        )


class MaskletTracker:
    """Accumulates the score table of a video from the segment maps a source emits.

    Sources call :meth:`set_scores` when a masklet is created (or re-scored) and
    :meth:`observe` with every emitted chunk; area and first / last frame are derived from the
    maps themselves, so they always agree with what was emitted. Columns are arrays indexed
    by masklet id, updated with one histogram per chunk.
    """

    def __init__(self) -> None:
        self._area = np.zeros(1, np.int64)
        self._first = np.full(1, np.iinfo(np.int64).max, np.int64)
        self._last = np.full(1, -1, np.int64)
        self._iou = np.full(1, np.nan)
        self._stability = np.full(1, np.nan)
        self._label = np.full(1, NO_LABEL, np.int64)

    def _grow(self, max_id: int) -> None:
        size = len(self._area)
        if max_id < size:
            return
        extra = max(max_id + 1, 2 * size) - size
        self._area = np.concatenate([self._area, np.zeros(extra, np.int64)])
        self._first = np.concatenate([self._first, np.full(extra, np.iinfo(np.int64).max, np.int64)])
        self._last = np.concatenate([self._last, np.full(extra, -1, np.int64)])
        self._iou = np.concatenate([self._iou, np.full(extra, np.nan)])
        self._stability = np.concatenate([self._stability, np.full(extra, np.nan)])
        self._label = np.concatenate([self._label, np.full(extra, NO_LABEL, np.int64)])

    def set_scores(
        self,
        masklet_id: int,
        predicted_iou: float = float("nan"),
        stability: float = float("nan"),
        label: int = NO_LABEL,
    ) -> None:
        """Records the scores of a masklet (replacing any recorded before).

        Args:
            masklet_id: the masklet's id in the segment maps (> 0).
            predicted_iou: the proposal's predicted IoU (NaN: none).
            stability: the proposal's stability score (NaN: none).
            label: class id of the text prompt that produced the masklet (−1: class-agnostic).
        """
        self._grow(int(masklet_id))
        self._iou[masklet_id] = predicted_iou
        self._stability[masklet_id] = stability
        self._label[masklet_id] = label

    def observe(self, segments: torch.Tensor, start: int) -> None:
        """Adds a chunk's (T, H, W) segment map whose first frame is video frame ``start``."""
        num_frames = segments.shape[0]
        seg = segments.reshape(num_frames, -1).long()  # (T, H·W)
        bins = int(seg.max()) + 1 if seg.numel() else 1
        self._grow(bins - 1)
        frame_of = torch.arange(num_frames).unsqueeze(1) * bins
        counts = torch.bincount((seg + frame_of).reshape(-1), minlength=num_frames * bins)
        counts = counts.reshape(num_frames, bins).numpy()  # (T, bins) pixels per frame and id
        present = counts > 0
        seen = present.any(axis=0)
        first = present.argmax(axis=0) + start
        last = num_frames - 1 - present[::-1].argmax(axis=0) + start
        self._area[:bins] += counts.sum(axis=0)
        self._first[:bins] = np.where(seen, np.minimum(self._first[:bins], first), self._first[:bins])
        self._last[:bins] = np.where(seen, np.maximum(self._last[:bins], last), self._last[:bins])

    def table(self) -> MaskletTable:
        """The table of every masklet that appeared in an emitted map, sorted by id."""
        ids = np.flatnonzero(self._area[1:] > 0) + 1
        return MaskletTable(
            id=ids.astype(np.int64),
            predicted_iou=self._iou[ids].copy(),
            stability=self._stability[ids].copy(),
            area=self._area[ids].copy(),
            first_frame=self._first[ids].copy(),
            last_frame=self._last[ids].copy(),
            label=self._label[ids].copy(),
        )


class MaskletSource(abc.ABC):
    """Turns the frames of a video, chunk by chunk, into segment maps.

    Subclasses implement :meth:`_segment` and :meth:`config`; this base class checks the
    order of chunks and keeps the score table (via :class:`MaskletTracker`).
    """

    #: Short name used in cache keys and reports.
    name: str = "source"

    def __init__(self) -> None:
        self._video: str | None = None
        self._next_frame = 0
        self._size: tuple[int, int] = (0, 0)
        self.tracker = MaskletTracker()

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """Every parameter that changes the output (the cache key is built from it)."""

    @abc.abstractmethod
    def _segment(self, frames: torch.Tensor, start: int, gt: torch.Tensor | None) -> torch.Tensor:
        """(T, H, W, 3) uint8 frames (video frames start…start+T−1) → (T, H, W) int32 segment map."""

    def _begin(self) -> None:  # noqa: B027 (an optional hook: most sources keep no per-video state)
        """Hook: reset per-video state."""

    def _end(self) -> None:  # noqa: B027 (an optional hook)
        """Hook: release per-video state."""

    def begin_video(self, video: str, height: int, width: int) -> None:
        """Starts a new video of frames of size height × width."""
        self._video = video
        self._next_frame = 0
        self._size = (int(height), int(width))
        self.tracker = MaskletTracker()
        self._begin()

    def add_chunk(self, frames: torch.Tensor, start: int, gt: torch.Tensor | None = None) -> torch.Tensor:
        """Segments the next chunk of the current video.

        Args:
            frames: (T, H, W, 3) uint8 RGB frames.
            start: index in the video of the first frame; must follow the previous chunk.
            gt: (T, H, W) evaluation ids, needed only by sources that read ground truth.

        Returns:
            (T, H, W) int32 segment map, 0 = no masklet.
        """
        if self._video is None:
            raise RuntimeError(f"{type(self).__name__}: call begin_video() before add_chunk()")
        if start != self._next_frame:
            raise ValueError(
                f"{type(self).__name__}, video {self._video!r}: chunk starts at frame {start} but frame "
                f"{self._next_frame} was expected next"
            )
        if frames.ndim != 4 or frames.shape[-1] != 3 or tuple(frames.shape[1:3]) != self._size:
            raise ValueError(
                f"{type(self).__name__}, video {self._video!r}: expected frames of shape (T, {self._size[0]}, "
                f"{self._size[1]}, 3), got {tuple(frames.shape)}"
            )
        segments = self._segment(frames, start, gt).to(torch.int32)
        if tuple(segments.shape) != tuple(frames.shape[:3]):
            raise RuntimeError(f"{type(self).__name__} returned a map of shape {tuple(segments.shape)}")
        self.tracker.observe(segments, start)
        self._next_frame = start + frames.shape[0]
        return segments

    def end_video(self) -> MaskletTable:
        """Finishes the current video and returns its masklet table."""
        table = self.tracker.table()
        self._end()
        self._video = None
        return table
