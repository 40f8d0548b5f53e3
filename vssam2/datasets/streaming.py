"""Evaluation streaming: whole videos, in frame order, cut into consecutive chunks.

Videos are assigned whole to DDP ranks and, within a rank, whole to DataLoader workers, so
every frame is read exactly once over the job and the chunks of a video arrive in order
(streaming temporal metrics keep per-video state between chunks).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from vssam2.datasets.index import VideoEntry
from vssam2.datasets.layout import VSPW_LAYOUT, DatasetLayout
from vssam2.datasets.reading import load_frames_range
from vssam2.probabilities import read_prob_frames

if TYPE_CHECKING:
    from vssam2.masklets.cache import MaskletCache


def balance_videos(frame_counts: Sequence[int], num_bins: int) -> list[list[int]]:
    """Deterministic greedy assignment of whole videos to bins (ranks or workers).

    Longest video first to the bin with fewest frames so far (ties → lowest bin; equal
    lengths → earlier video first). Bins list their video indices in ascending order, so a
    rank streams its videos in split order. Nothing is padded or duplicated: a bin may be
    empty when there are more bins than videos.

    Args:
        frame_counts: frames per video.
        num_bins: number of bins (≥ 1).

    Returns:
        Video indices per bin.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    loads = [0] * num_bins
    bins: list[list[int]] = [[] for _ in range(num_bins)]
    for video in sorted(range(len(frame_counts)), key=lambda i: (-frame_counts[i], i)):
        target = min(range(num_bins), key=lambda b: (loads[b], b))
        bins[target].append(video)
        loads[target] += frame_counts[video]
    return [sorted(indices) for indices in bins]


def rank_from_env() -> tuple[int, int]:
    """(rank, world size) from ``RANK`` / ``WORLD_SIZE`` as torchrun sets them; (0, 1) without."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    return rank, world_size


def chunk_bounds(num_frames: int, clip_len: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, stop)`` chunks of ``clip_len`` frames; the last may be shorter."""
    return [(start, min(start + clip_len, num_frames)) for start in range(0, num_frames, clip_len)]


class VideoClipStream(IterableDataset):
    """Streams the videos of one rank as ordered chunks (use with ``DataLoader(batch_size=None)``).

    Each item is one chunk of one video::

        {"video": str, "frame_ids": list[str], "start": int, "num_frames": int, "last": bool,
         "frames": (T, H, W, 3) uint8 (only when load_frames), "gt": (T, H, W) uint8,
         "preds": {method: (T, H, W) uint8},
         "segments": (T, H, W) int32, "masklet_table": MaskletTable, "masklet_table_path": str
         (only with masklet_cache),
         "probs": {method: TopKProbs} (only for videos indexed with probability folders)}

    ``"probs"`` holds a :class:`vssam2.probabilities.TopKProbs` ((T, k, H, W) uint8 classes
    and float16 probabilities) per method that has a probability folder; each file is checked
    for shapes, dtypes and value ranges, not for agreement with the prediction PNG.

    Args:
        videos: the whole split (all ranks), in split order.
        layout: dataset layout (mask decoding).
        clip_len: frames per chunk.
        load_frames: decode RGB frames (not needed when only scoring predictions).
        num_classes: number of classes (label range checks).
        rank: this process's rank.
        world_size: number of processes.
        masklet_cache: cached segment maps to add to every chunk as ``"segments"``.
        prob_k: the k of each method's probability folder (every file must have it); a
            method not listed takes the k of its first file in each chunk.
    """

    def __init__(
        self,
        videos: Sequence[VideoEntry],
        layout: DatasetLayout = VSPW_LAYOUT,
        clip_len: int = 16,
        load_frames: bool = True,
        num_classes: int = 124,
        rank: int = 0,
        world_size: int = 1,
        masklet_cache: MaskletCache | None = None,
        prob_k: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        if clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {clip_len}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.layout = layout
        self.clip_len = clip_len
        self.load_frames = load_frames
        self.num_classes = num_classes
        self.rank = rank
        self.world_size = world_size
        self.masklet_cache = masklet_cache
        self.prob_k: dict[str, int] = dict(prob_k or {})
        all_videos = list(videos)
        shard = balance_videos([video.num_frames for video in all_videos], world_size)[rank]
        # Only this rank's videos are kept: less to pickle into every worker.
        self.videos: list[VideoEntry] = [all_videos[i] for i in shard]

    def __len__(self) -> int:
        """Chunks this rank yields over all its workers (for progress bars)."""
        return sum(math.ceil(video.num_frames / self.clip_len) for video in self.videos)

    def worker_videos(self, worker_id: int = 0, num_workers: int = 1) -> list[VideoEntry]:
        """The videos a DataLoader worker of this rank streams (whole videos, balanced by frames)."""
        shard = balance_videos([video.num_frames for video in self.videos], num_workers)[worker_id]
        return [self.videos[i] for i in shard]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        videos = self.worker_videos(info.id, info.num_workers) if info is not None else self.videos
        for video in videos:
            bounds = chunk_bounds(video.num_frames, self.clip_len)
            for start, stop in bounds:
                item: dict[str, Any] = {
                    "video": video.name,
                    "frame_ids": list(video.frame_ids[start:stop]),
                    "start": start,
                    "num_frames": video.num_frames,
                    "last": stop == video.num_frames,
                }
                item.update(load_frames_range(video, start, stop, self.layout, self.num_classes, self.load_frames))
                if self.masklet_cache is not None:
                    size = tuple(item["gt"].shape[1:])
                    item["segments"] = self.masklet_cache.read_segments(video.name, item["frame_ids"], size)
                    if start == 0:  # the score table, read once per video (refinement rules read it)
                        table = self.masklet_cache.read_table(video.name)
                    item["masklet_table"] = table
                    item["masklet_table_path"] = str(self.masklet_cache.table_path(video.name))
                if video.prob_dirs:
                    size = tuple(item["gt"].shape[1:])
                    item["probs"] = {
                        method: read_prob_frames(
                            [video.prob_path(method, index) for index in range(start, stop)],
                            self.num_classes,
                            size,
                            self.prob_k.get(method),
                        )
                        for method in video.prob_dirs
                    }
                yield item


def passthrough(item: Any) -> Any:
    """No-op collate for ``batch_size=None`` loaders (module level so workers can pickle it)."""
    return item


def stream_loader(dataset: VideoClipStream, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """DataLoader that yields one chunk per batch, uncollated (videos differ in resolution)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=passthrough,
        persistent_workers=False,
    )
