"""Masklet vectors of one clip: frozen encoder → masked-average pooling (+ GT histograms).

The single code path used both online (the classifier's steps) and by the feature cache, so
cached vectors are the online ones by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vssam2.labels import IGNORE_INDEX, NUM_CLASSES
from vssam2.pooling import PoolingMode, masked_average_pool, split_by_frame
from vssam2.refine import class_histogram


@dataclass
class ClipMasklets:
    """The masklets of one clip as classifier inputs.

    Attributes:
        ids: (N,) int64 masklet id of each row.
        frame: (N,) int64 frame (within the clip) of each row; −1 when rows span the clip.
        vectors: (N, C) float32 pooled features (Eq. 3).
        area: (N,) int64 pixels per row.
        rows: (T, H, W) int64 row of each pixel, −1 where no masklet (for painting).
        hist: (N, 256) int64 GT pixel counts per row and label id, or None without GT.
    """

    ids: torch.Tensor
    frame: torch.Tensor
    vectors: torch.Tensor
    area: torch.Tensor
    rows: torch.Tensor
    hist: torch.Tensor | None


def encode_frames(
    encoder: torch.nn.Module, frames: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Runs a frozen encoder over (T, H, W, 3) uint8 frames in batches → (T, C, h, w) float32."""
    if batch_size < 1:
        raise ValueError(f"encoder batch size must be >= 1, got {batch_size}")
    outs = [encoder(frames[i : i + batch_size].to(device)) for i in range(0, frames.shape[0], batch_size)]
    return torch.cat(outs)


def extract_clip_masklets(
    features: torch.Tensor,
    segments: torch.Tensor,
    gt: torch.Tensor | None = None,
    pooling: PoolingMode = "bilinear",
    per_frame: bool = False,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> ClipMasklets:
    """Pools the features of a clip over its masklets.

    Args:
        features: (T, C, h, w) float features of the clip's frames.
        segments: (T, H, W) int segment map, 0 = no masklet.
        gt: (T, H, W) GT ids, for targets and histograms; None at inference.
        pooling: feature upsampling of :func:`masked_average_pool` ("bilinear" / "nearest").
        per_frame: pool each frame's part of a masklet separately (one row per (frame, id))
            instead of one row per masklet over the clip.
        num_classes: C (GT ids above are ignore).
        ignore_index: ignore id of the GT.
    """
    segments = segments.to(features.device)
    if per_frame:
        codes, frame, ids = split_by_frame(segments)
    else:
        codes, frame, ids = segments.long(), None, None
    pooled = masked_average_pool(features, codes, pooling)
    num = pooled.ids.shape[0]
    if per_frame:
        frame, ids = frame[pooled.ids - 1], ids[pooled.ids - 1]
    else:
        frame, ids = torch.full((num,), -1, dtype=torch.int64, device=pooled.ids.device), pooled.ids
    span = int(codes.max()) + 1 if codes.numel() else 1
    lut = torch.full((span,), -1, dtype=torch.int64, device=codes.device)
    lut[pooled.ids] = torch.arange(num, device=codes.device)
    hist = None
    if gt is not None:
        hist_ids, hist = class_histogram(codes.cpu(), gt.cpu(), num_classes, ignore_index)
        if not torch.equal(hist_ids, pooled.ids.cpu()):  # both list the ids present: same rows
            raise RuntimeError("masklet rows of pooling and GT histogram disagree")
    return ClipMasklets(ids=ids, frame=frame, vectors=pooled.vectors, area=pooled.area, rows=lut[codes], hist=hist)


def paint_rows(rows: torch.Tensor, classes: torch.Tensor, fill: torch.Tensor | int = IGNORE_INDEX) -> torch.Tensor:
    """Paints each masklet row's class onto its pixels.

    Args:
        rows: (T, H, W) int64 row per pixel, −1 where no masklet (:attr:`ClipMasklets.rows`).
        classes: (N,) class per row.
        fill: value of uncovered pixels: an id (255 = no prediction, I-SAM2), or a (T, H, W)
            base prediction to fill them from (I-SAM2_base).

    Returns:
        (T, H, W) uint8 prediction.
    """
    table = torch.cat(
        [classes.to(torch.uint8), torch.full((1,), IGNORE_INDEX, dtype=torch.uint8, device=classes.device)]
    )
    painted = table.to(rows.device)[rows]  # row −1 → the trailing 255
    if isinstance(fill, torch.Tensor):
        painted = torch.where(rows >= 0, painted, fill.to(device=rows.device, dtype=torch.uint8))
    elif fill != IGNORE_INDEX:
        painted = torch.where(rows >= 0, painted, torch.full_like(painted, fill))
    return painted
