"""Training: random clips of consecutive frames with one augmentation per clip."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from vssam2.datasets.index import VideoEntry
from vssam2.datasets.layout import VSPW_LAYOUT, DatasetLayout
from vssam2.datasets.reading import load_frames_range
from vssam2.errors import DataError

if TYPE_CHECKING:
    from vssam2.masklets.cache import MaskletCache

# A clip transform takes albumentations' batch targets and returns them transformed:
# transform(images=(T, H, W, 3) uint8, masks=(T, H, W) uint8) -> {"images": ..., "masks": ...}.
# albumentations 2.x samples the parameters once per call for these targets, so every frame and
# mask of the clip gets the same crop and flip.
ClipTransform = Callable[..., dict[str, Any]]


def default_train_transform(crop: tuple[int, int] = (256, 256)) -> A.Compose:
    """Random resized crop to ``crop`` (H, W), horizontal flip, colour jitter (frames only).

    Masks are resized with nearest-neighbour interpolation so no id is blended into another.
    """
    return A.Compose(
        [
            A.RandomResizedCrop(
                size=tuple(crop), scale=(0.5, 1.0), interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
            ),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=0.8),
        ]
    )


def _reseed(transform: ClipTransform, seed: int) -> None:
    """Gives an albumentations transform a fresh random state drawn from torch's RNG.

    albumentations 2.0 seeds its generators once at construction; forked DataLoader workers
    would all replay the same augmentations. torch's RNG is seeded per worker by the
    DataLoader and by ``seed_everything``, so this makes clips both varied and reproducible.
    """
    set_state = getattr(transform, "set_random_state", None)
    if callable(set_state):
        set_state(np.random.default_rng(seed), random.Random(seed))


class TrainClipDataset(Dataset):
    """Random training clips: random video, random start, ``clip_len`` consecutive frames.

    The index only bounds the epoch length; each item is drawn from torch's RNG. Items are
    ``{"video": str, "start": int, "frame_ids": list[str], "frames": (T, H, W, 3) uint8,
    "gt": (T, H, W) uint8}`` after the clip transform. Load-time problems raise
    :class:`DataError` naming the file.

    Args:
        videos: training videos.
        layout: dataset layout.
        clip_len: frames per clip.
        clips_per_epoch: items per epoch (default: one per video).
        transform: clip transform (see ``ClipTransform``); None = no augmentation.
        num_classes: number of classes.
        masklet_cache: cached segment maps; items then carry ``"segments"`` (T, H, W) int32,
            transformed with the same geometry as frames and GT.

    Raises:
        DataError: if no video has ``clip_len`` frames (shorter ones are left out with a warning).
    """

    def __init__(
        self,
        videos: Sequence[VideoEntry],
        layout: DatasetLayout = VSPW_LAYOUT,
        clip_len: int = 4,
        clips_per_epoch: int | None = None,
        transform: ClipTransform | None = None,
        num_classes: int = 124,
        masklet_cache: MaskletCache | None = None,
    ) -> None:
        super().__init__()
        if clip_len < 1:
            raise ValueError(f"train clip_len must be >= 1, got {clip_len}")
        short = [video.name for video in videos if video.num_frames < clip_len]
        if short:
            warnings.warn(
                f"{len(short)} training videos have fewer than {clip_len} frames and are never sampled: "
                f"{short[:5]}{' ...' if len(short) > 5 else ''}",
                stacklevel=2,
            )
        self.videos = [video for video in videos if video.num_frames >= clip_len]
        if not self.videos:
            raise DataError(f"no training video has at least train_clip_len={clip_len} frames")
        self.layout = layout
        self.clip_len = clip_len
        self.clips_per_epoch = clips_per_epoch if clips_per_epoch is not None else len(self.videos)
        if self.clips_per_epoch < 1:
            raise ValueError(f"train_clips_per_epoch must be >= 1, got {self.clips_per_epoch}")
        self.transform = transform
        self.num_classes = num_classes
        self.masklet_cache = masklet_cache
        if masklet_cache is not None:
            masklet_cache.check_videos([video.name for video in self.videos])

    def __len__(self) -> int:
        return self.clips_per_epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.clips_per_epoch:
            raise IndexError(index)
        video = self.videos[int(torch.randint(len(self.videos), ()).item())]
        start = int(torch.randint(video.num_frames - self.clip_len + 1, ()).item())
        data = load_frames_range(
            video, start, start + self.clip_len, self.layout, self.num_classes, load_frames=True, load_preds=False
        )
        frame_ids = list(video.frame_ids[start : start + self.clip_len])
        frames = data["frames"].numpy()  # (T, H, W, 3) uint8
        gt = data["gt"].numpy()  # (T, H, W) uint8
        segments = None
        if self.masklet_cache is not None:
            segments = self.masklet_cache.read_segments(video.name, frame_ids, tuple(gt.shape[1:])).numpy()
        if self.transform is not None:
            _reseed(self.transform, int(torch.randint(2**31 - 1, ()).item()))
            masks = gt
            if segments is not None:
                # Segments travel inside the mask as id·256 + GT (exact in float32 for 16-bit ids),
                # so every geometric transform moves both alike, and a mask padded with 255 reads
                # back as "no masklet" + ignore.
                masks = segments.astype(np.float32) * 256 + gt
            out = self.transform(images=frames, masks=masks)
            # Flips can return negative-stride views, which torch.from_numpy rejects.
            frames = np.ascontiguousarray(out["images"], dtype=np.uint8)
            masks = np.ascontiguousarray(np.stack(out["masks"]) if isinstance(out["masks"], list) else out["masks"])
            if segments is not None:
                code = masks.astype(np.int64)
                segments, gt = (code >> 8).astype(np.int32), (code & 255).astype(np.uint8)
            else:
                gt = masks.astype(np.uint8, copy=False)
        item = {
            "video": video.name,
            "start": start,
            "frame_ids": frame_ids,
            "frames": torch.from_numpy(frames),  # (T, H, W, 3) uint8
            "gt": torch.from_numpy(gt),  # (T, H, W) uint8
        }
        if segments is not None:
            item["segments"] = torch.from_numpy(np.ascontiguousarray(segments, dtype=np.int32))  # (T, H, W) int32
        return item


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks training clips: frames (B, T, H, W, 3) uint8, gt (B, T, H, W) uint8, start (B,) int64
    (+ segments (B, T, H, W) int32 with a masklet cache)."""
    batch = {
        "frames": torch.stack([item["frames"] for item in items]),
        "gt": torch.stack([item["gt"] for item in items]),
        "video": [item["video"] for item in items],
        "start": torch.tensor([item["start"] for item in items], dtype=torch.int64),
        "frame_ids": [item["frame_ids"] for item in items],
    }
    if "segments" in items[0]:
        batch["segments"] = torch.stack([item["segments"] for item in items])
    return batch
