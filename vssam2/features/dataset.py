"""Datasets over the feature cache: shuffled masklet vectors for training, whole videos for validation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from vssam2.datasets.streaming import balance_videos
from vssam2.features.cache import FeatureCache
from vssam2.labels import IGNORE_INDEX


class CachedMaskletVectors(Dataset):
    """Every masklet row of a split with a valid target, held in memory (float16 vectors).

    Items are fetched in batches (``__getitems__``): a DataLoader with ``batch_size=B`` and
    ``collate_fn=`` :func:`first_item` yields ``{"vectors": (B, C) float32, "target": (B,)
    int64, "area": (B,) int64}`` with one gather per batch instead of B Python calls.

    Args:
        cache: the feature cache.
        split: split to read.
        videos: videos of the split (all must be in the cache).
    """

    def __init__(self, cache: FeatureCache, split: str, videos: Sequence[str]) -> None:
        cache.check_split(split, list(videos))
        vectors, target, area = [], [], []
        for video in videos:
            arrays = cache.read(split, video)
            keep = arrays["target"] != IGNORE_INDEX  # ignore-only masklets teach nothing
            vectors.append(arrays["vectors"][keep])
            target.append(arrays["target"][keep].astype(np.int64))
            area.append(arrays["area"][keep])
        self.vectors = torch.from_numpy(np.concatenate(vectors))  # (N, C) float16
        self.target = torch.from_numpy(np.concatenate(target))  # (N,) int64
        self.area = torch.from_numpy(np.concatenate(area))  # (N,) int64
        if self.vectors.shape[0] == 0:
            raise ValueError(f"feature cache {cache.directory}: split {split!r} has no masklet with a valid target")

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return [{"vectors": self.vectors[index].float(), "target": self.target[index], "area": self.area[index]}]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]


def first_item(items: list[Any]) -> Any:
    """Collate function for datasets whose ``__getitems__`` already returns one batch."""
    return items[0]


class CachedVideoMasklets(IterableDataset):
    """One item per video of one rank's share of a split (sharded like evaluation).

    Items: ``{"video": str, "vectors": (N, C) float32, "target": (N,) int64, "hist_row",
    "hist_label", "hist_count": (nnz,) int64, "uncovered": (256,) int64}``.

    Args:
        cache: the feature cache.
        split: split to read.
        videos: videos of the whole split, with their frame counts (for balanced sharding).
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(
        self, cache: FeatureCache, split: str, videos: Sequence[tuple[str, int]], rank: int = 0, world_size: int = 1
    ) -> None:
        cache.check_split(split, [name for name, _ in videos])
        shard = balance_videos([frames for _, frames in videos], world_size)[rank]
        self.cache = cache
        self.split = split
        self.videos = [videos[i] for i in shard]

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        videos = self.videos
        if info is not None:
            shard = balance_videos([frames for _, frames in videos], info.num_workers)[info.id]
            videos = [videos[i] for i in shard]
        for name, _ in videos:
            yield self.item(name, self.cache.read(self.split, name))

    def item(self, name: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        """One video's item from its cache arrays (subclasses over other caches override it)."""
        return {
            "video": name,
            "vectors": torch.from_numpy(arrays["vectors"]).float(),
            "target": torch.from_numpy(arrays["target"].astype(np.int64)),
            "hist_row": torch.from_numpy(arrays["hist_row"].astype(np.int64)),
            "hist_label": torch.from_numpy(arrays["hist_label"].astype(np.int64)),
            "hist_count": torch.from_numpy(arrays["hist_count"].astype(np.int64)),
            "uncovered": torch.from_numpy(arrays["uncovered"].astype(np.int64)),
        }
