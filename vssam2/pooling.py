"""Masked-average pooling of frozen features over masklets (Eq. 3), vectorised.

A masklet m is represented by the mean of the feature map F over its pixels:

    f_m = Σ_p M_m(p) · F(p) / Σ_p M_m(p)                                   (Eq. 3)

Features live on a coarse grid (h, w) (stride 4…32), masklets on the frame grid (H, W). We do
not shrink the segment map to the feature grid (a masklet smaller than a feature cell would
vanish); instead F is upsampled to (H, W) with the same interpolation as
``torch.nn.functional.interpolate(..., align_corners=False)`` and Eq. 3 is evaluated per
pixel. The upsampled map is never materialised: each pixel contributes fixed weights to at
most 4 feature cells (1 for ``"nearest"``), so Σ_p M_m(p)·F_up(p) = Σ_cell A[m, cell]·F(cell)
with A the summed interpolation weights of m's pixels, built with one weighted bincount per
frame. Every masklet with at least one pixel gets a vector, however small it is.

A masklet is the set of pixels carrying its id in the frames passed in (a clip); use
:func:`split_by_frame` first to pool each frame's part of a masklet separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

POOLING_MODES = ("bilinear", "nearest")


@dataclass
class PooledMasklets:
    """Pooled masklet vectors of one clip.

    Attributes:
        ids: (N,) int64 masklet ids (> 0), increasing.
        vectors: (N, C) float32 mean feature of each masklet (Eq. 3).
        area: (N,) int64 pixels of each masklet.
    """

    ids: torch.Tensor
    vectors: torch.Tensor
    area: torch.Tensor


def _axis_weights(out_size: int, in_size: int, mode: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Source cells and weights of each output position along one axis.

    Mirrors ``F.interpolate`` with ``align_corners=False`` (PyTorch's
    ``area_pixel_compute_source_index``): bilinear reads cells ⌊s⌋ and ⌊s⌋+1 (clamped) at
    s = max((i + 0.5)·in/out − 0.5, 0); nearest reads ⌊i·in/out⌋.

    Returns:
        cells: (out_size, K) int64 source indices (K = 2 bilinear, 1 nearest).
        weights: (out_size, K) float32, summing to 1 along K.
    """
    scale = in_size / out_size
    pos = torch.arange(out_size, device=device, dtype=torch.float64)
    if mode == "nearest":
        cells = torch.clamp((pos * scale).floor().long(), max=in_size - 1).unsqueeze(1)
        return cells, torch.ones(out_size, 1, device=device)
    src = ((pos + 0.5) * scale - 0.5).clamp(min=0.0)
    low = src.floor().long().clamp(max=in_size - 1)
    high = torch.clamp(low + 1, max=in_size - 1)
    frac = (src - low.double()).clamp(0.0, 1.0)
    cells = torch.stack([low, high], dim=1)
    weights = torch.stack([1.0 - frac, frac], dim=1).float()
    return cells, weights


def split_by_frame(segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gives each (frame, masklet) pair its own id, so pooling treats frames separately.

    Args:
        segments: (T, H, W) int segment map, 0 = no masklet.

    Returns:
        codes: (T, H, W) int64 map with ids 1…R (0 kept where no masklet).
        frame: (R,) int64 frame index of each new id (new id r is at position r − 1).
        ids: (R,) int64 original masklet id of each new id.
    """
    num_frames = segments.shape[0]
    seg = segments.long()
    span = int(seg.max()) + 1 if seg.numel() else 1
    pair = seg + torch.arange(num_frames, device=seg.device).view(-1, 1, 1) * span  # (T, H, W)
    present = torch.bincount(pair.reshape(-1), minlength=num_frames * span) > 0
    present.view(num_frames, span)[:, 0] = False
    pairs = torch.nonzero(present).squeeze(1)  # (R,) increasing: frame-major
    lut = torch.zeros(num_frames * span, dtype=torch.int64, device=seg.device)
    lut[pairs] = torch.arange(1, pairs.shape[0] + 1, device=seg.device)
    return lut[pair], pairs // span, pairs % span


def masked_average_pool(
    features: torch.Tensor,
    segments: torch.Tensor,
    mode: str = "bilinear",
) -> PooledMasklets:
    """Masked-average pooling (Eq. 3) of every masklet of a clip.

    Args:
        features: (T, C, h, w) float feature maps of the T frames.
        segments: (T, H, W) int segment map, 0 = no masklet; the same id in several frames is
            one masklet and is pooled over all of them.
        mode: how features are upsampled to the frame grid: "bilinear" (as
            ``F.interpolate(..., mode="bilinear", align_corners=False)``) or "nearest".

    Returns:
        The ids present, their mean feature vectors and areas.
    """
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling mode must be one of {POOLING_MODES}, got {mode!r}")
    if features.dim() != 4 or segments.dim() != 3 or features.shape[0] != segments.shape[0]:
        raise ValueError(
            f"need features (T, C, h, w) and segments (T, H, W) with the same T, got "
            f"{tuple(features.shape)} and {tuple(segments.shape)}"
        )
    if segments.is_floating_point():
        raise TypeError("segments must hold integer ids")
    device = features.device
    num_frames, channels, feat_h, feat_w = features.shape
    height, width = segments.shape[1:]
    seg = segments.to(device=device, dtype=torch.int64)
    if seg.numel() and int(seg.min()) < 0:
        raise ValueError("segment ids must be >= 0 (0 = no masklet)")

    # Masklet ids → rows 0…N−1 (row N = "no masklet", dropped at the end).
    span = int(seg.max()) + 1 if seg.numel() else 1
    counts = torch.bincount(seg.reshape(-1), minlength=span)
    counts[0] = 0
    ids = torch.nonzero(counts).squeeze(1)  # (N,)
    num = ids.shape[0]
    lut = torch.full((span,), num, dtype=torch.int64, device=device)
    lut[ids] = torch.arange(num, device=device)
    rows = lut[seg]  # (T, H, W) int64

    cells_y, weights_y = _axis_weights(height, feat_h, mode, device)  # (H, Ky)
    cells_x, weights_x = _axis_weights(width, feat_w, mode, device)  # (W, Kx)
    # Every (pixel, source cell) pair: cell index and weight, separable in y and x.
    cell = (cells_y[:, None, :, None] * feat_w + cells_x[None, :, None, :]).reshape(height, width, -1)  # (H, W, K)
    weight = (weights_y[:, None, :, None] * weights_x[None, :, None, :]).reshape(height, width, -1)  # (H, W, K)
    num_cells = feat_h * feat_w

    sums = torch.zeros(num + 1, channels, dtype=torch.float32, device=device)
    for t in range(num_frames):  # one weighted histogram per frame keeps the bins at (N+1)·h·w
        key = (rows[t].unsqueeze(-1) * num_cells + cell).reshape(-1)  # (H·W·K,)
        area_weights = torch.bincount(key, weights=weight.reshape(-1), minlength=(num + 1) * num_cells)
        area_weights = area_weights.view(num + 1, num_cells)[:num]  # (N, h·w): A of Eq. 3
        # Dense (N, h·w) @ (h·w, C): one BLAS call beats gathering the sparse entries even
        # when masklets are compact, and does not degrade when they are fragmented.
        sums[:num] += area_weights.to(torch.float32) @ features[t].reshape(channels, num_cells).t().float()
    area = counts[ids]
    vectors = sums[:num] / area.unsqueeze(1).float()
    return PooledMasklets(ids=ids, vectors=vectors, area=area)
