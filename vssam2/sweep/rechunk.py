"""Re-chunking a stream of one video's chunks to another chunk length (the vote length of a point).

The sweep streams each video once, in the data's chunks; a point votes per ``clip_len`` frames
(its masklet window). :class:`Rechunker` buffers the chunks it is given and hands out chunks of
exactly ``clip_len`` frames aligned on frame 0 of the video (the last one shorter), the chunks
:class:`vssam2.datasets.VideoClipStream` would yield with that ``clip_len``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

#: Per-frame tensors of a chunk that are carried over (concatenated along time).
FRAME_KEYS: tuple[str, ...] = ("gt", "segments")
#: Per-video values of a chunk (the masklets' score table): an output chunk carries the latest.
VIDEO_KEYS: tuple[str, ...] = ("masklet_table", "masklet_table_path")


class Rechunker:
    """Turns one video's chunks into chunks of ``clip_len`` frames.

    Args:
        clip_len: frames per output chunk.

    Holds at most ``clip_len`` + (one input chunk) frames of ground truth, predictions and
    segment maps.
    """

    def __init__(self, clip_len: int) -> None:
        if clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {clip_len}")
        self.clip_len = int(clip_len)
        self._parts: list[Mapping[str, Any]] = []
        self._frames = 0
        self._start = 0
        self._video: str | None = None

    def push(self, chunk: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Adds the next chunk of the video (``start`` must follow on); yields every full chunk."""
        start = int(chunk["start"])
        if start == 0:
            if self._parts:
                raise RuntimeError(f"video {self._video!r} ended without its last chunk")
            self._video, self._start, self._frames = chunk["video"], 0, 0
        elif chunk["video"] != self._video or start != self._start + self._frames:
            raise ValueError(
                f"chunk of video {chunk['video']!r} at frame {start} does not follow video {self._video!r} "
                f"frame {self._start + self._frames}"
            )
        self._parts.append(chunk)
        self._frames += len(chunk["frame_ids"])
        last = bool(chunk["last"])
        while self._frames >= self.clip_len or (last and self._frames > 0):
            take = min(self.clip_len, self._frames)
            yield self._take(take, last=last and take == self._frames)

    def _take(self, count: int, last: bool) -> dict[str, Any]:
        merged = self._merge()
        out: dict[str, Any] = {
            "video": self._video,
            "start": self._start,
            "last": last,
            "frame_ids": merged["frame_ids"][:count],
            "preds": {m: p[:count] for m, p in merged["preds"].items()},
        }
        for key in FRAME_KEYS:
            if key in merged:
                out[key] = merged[key][:count]
        for key in VIDEO_KEYS:
            if key in self._parts[-1]:
                out[key] = self._parts[-1][key]
        rest = len(merged["frame_ids"]) - count
        if rest:
            remainder: dict[str, Any] = {
                "frame_ids": merged["frame_ids"][count:],
                "preds": {m: p[count:] for m, p in merged["preds"].items()},
            }
            for key in FRAME_KEYS:
                if key in merged:
                    remainder[key] = merged[key][count:]
            for key in VIDEO_KEYS:
                if key in self._parts[-1]:
                    remainder[key] = self._parts[-1][key]
            self._parts = [remainder]
        else:
            self._parts = []
        self._start += count
        self._frames -= count
        return out

    def _merge(self) -> dict[str, Any]:
        """The buffered chunks as one (a view of the single chunk when there is only one)."""
        if len(self._parts) == 1:
            return dict(self._parts[0])
        merged: dict[str, Any] = {"frame_ids": [f for part in self._parts for f in part["frame_ids"]]}
        merged["preds"] = {m: torch.cat([part["preds"][m] for part in self._parts]) for m in self._parts[0]["preds"]}
        for key in FRAME_KEYS:
            if key in self._parts[0]:
                merged[key] = torch.cat([part[key] for part in self._parts])
        self._parts = [merged]
        return merged
