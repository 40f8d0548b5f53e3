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
from typing import Literal

import torch

PoolingMode = Literal["bilinear", "nearest"]
POOLING_MODES: tuple[PoolingMode, ...] = ("bilinear", "nearest")


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


# Tables indexed by id (histograms, look-up tables) up to this length, or as long as the map
# itself, are cheap; beyond that, ids are compacted first so memory follows the pixel count.
_DENSE_SPAN = 1 << 16


def _scale(in_size: int | torch.Tensor, out_size: int | torch.Tensor) -> torch.Tensor:
    """in/out in float32, as PyTorch's ``compute_scales_value<float>`` (float division)."""
    return torch.as_tensor(in_size).to(torch.float32) / torch.as_tensor(out_size).to(torch.float32)


def nearest_source_index(pos: torch.Tensor, in_size: int | torch.Tensor, out_size: int | torch.Tensor) -> torch.Tensor:
    """Source cell of output positions under ``F.interpolate(..., mode="nearest")``.

    PyTorch (``nearest_idx``, ATen ``UpSample.h``) computes ⌊i · s⌋ with the scale
    s = in / out and the product both in float32, then caps at in − 1. Where i·in/out is a
    whole number the float32 product can fall just below it (2 cells → 82 pixels at i = 41:
    cell 0, where exact or float64 arithmetic gives cell 1); this repeats PyTorch's arithmetic.

    Args:
        pos: (...) int64 output positions i.
        in_size: input length (an int or a tensor broadcasting with ``pos``).
        out_size: output length (the same).

    Returns:
        (...) int64 source cells.
    """
    src = (pos.to(torch.float32) * _scale(in_size, out_size).to(pos.device)).floor().long()
    return torch.minimum(src, torch.as_tensor(in_size, device=pos.device) - 1)


def linear_source_weights(
    pos: torch.Tensor, in_size: int | torch.Tensor, out_size: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source cells and weights under ``F.interpolate(..., "bilinear", align_corners=False)``.

    PyTorch (``area_pixel_compute_source_index`` / ``guard_index_and_lambda``, float32 for
    float32, float16 and bfloat16 input) reads cells i₀ = min(⌊s⌋, in − 1) and
    i₁ = min(i₀ + 1, in − 1) with weights 1 − λ and λ = clamp(s − i₀, 0, 1), at
    s = max(scale · (i + ½) − ½, 0). Its AVX2 / AVX-512 CPU kernels contract
    scale · (i + ½) − ½ into one fused multiply-add (a single rounding to float32); that is
    done here exactly (the float32 product is exact in float64, and so is subtracting ½
    wherever s ≥ 0), so cells and weights equal PyTorch's bit for bit (checked for every
    size pair up to 80 → 900 in the tests). Its scalar
    (``ATEN_CPU_CAPABILITY=default``) build rounds twice, which moves λ by up to a float32
    ulp.

    Args:
        pos: (...) int64 output positions i.
        in_size: input length (an int or a tensor broadcasting with ``pos``).
        out_size: output length (the same).

    Returns:
        low, high: (...) int64 source cells i₀, i₁.
        w_low, w_high: (...) float32 weights 1 − λ and λ.
    """
    scale = _scale(in_size, out_size).to(pos.device).double()
    half_shifted = (pos.to(torch.float32) + 0.5).double()  # i + ½, exact in float32 as in PyTorch
    src = (half_shifted * scale - 0.5).to(torch.float32).clamp(min=0.0)
    last = torch.as_tensor(in_size, device=pos.device) - 1
    low = torch.minimum(src.floor().long(), last)
    w_high = (src - low.to(torch.float32)).clamp(0.0, 1.0)
    high = low + (low < last).long()
    return low, high, 1.0 - w_high, w_high


def _axis_weights(
    out_size: int, in_size: int, mode: PoolingMode, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source cells and weights of each output position along one axis, as ``F.interpolate``.

    Returns:
        cells: (out_size, K) int64 source indices (K = 2 bilinear, 1 nearest).
        weights: (out_size, K) float32, summing to 1 along K.
    """
    pos = torch.arange(out_size, device=device)
    if mode == "nearest":
        return nearest_source_index(pos, in_size, out_size).unsqueeze(1), torch.ones(out_size, 1, device=device)
    low, high, w_low, w_high = linear_source_weights(pos, in_size, out_size)
    return torch.stack([low, high], dim=1), torch.stack([w_low, w_high], dim=1)


def _distinct(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct values of non-negative int64 keys, each key's index among them, their counts.

    A bincount and a look-up table as long as the largest key are fastest while that key is
    small; past ``max(keys.numel(), _DENSE_SPAN)`` (sparse ids such as 2**26 in a small map)
    ``torch.unique`` is used instead, so memory follows the number of keys, not their size.

    Returns:
        values: (U,) int64 distinct keys, increasing.
        index: int64 with the shape of ``keys``: position of each key in ``values``.
        counts: (U,) int64 occurrences of each value.
    """
    if keys.numel() == 0:
        empty = keys.new_zeros(0)
        return empty, keys.new_zeros(keys.shape), empty
    span = int(keys.max()) + 1
    if span > max(keys.numel(), _DENSE_SPAN):
        return torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    counts = torch.bincount(keys.reshape(-1), minlength=span)
    values = torch.nonzero(counts).squeeze(1)
    lut = torch.zeros(span, dtype=torch.int64, device=keys.device)
    lut[values] = torch.arange(values.shape[0], device=keys.device)
    return values, lut[keys], counts[values]


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
    if num_frames * span <= max(seg.numel(), _DENSE_SPAN):
        values, index = torch.arange(span, device=seg.device), seg
    else:  # sparse ids compacted first, so the pair codes stay below T·(distinct ids)
        values, index, _ = _distinct(seg)
        span = max(values.shape[0], 1)
    pair = index + torch.arange(num_frames, device=index.device).view(-1, 1, 1) * span  # (T, H, W)
    pairs, pair_index, _ = _distinct(pair)  # (P,) increasing: frame-major
    kept = values[pairs % span] != 0  # (P,) pairs of a masklet, not of "no masklet"
    lut = torch.zeros(pairs.shape[0], dtype=torch.int64, device=index.device)
    lut[kept] = torch.arange(1, int(kept.sum()) + 1, device=index.device)
    kept_pairs = pairs[kept]
    return lut[pair_index], kept_pairs // span, values[kept_pairs % span]


def masked_average_pool(
    features: torch.Tensor,
    segments: torch.Tensor,
    mode: PoolingMode = "bilinear",
) -> PooledMasklets:
    """Masked-average pooling (Eq. 3) of every masklet of a clip.

    Args:
        features: (T, C, h, w) float feature maps of the T frames.
        segments: (T, H, W) int segment map, 0 = no masklet; the same id in several frames is
            one masklet and is pooled over all of them.
        mode: how features are upsampled to the frame grid: "bilinear" (as
            ``F.interpolate(..., mode="bilinear", align_corners=False)``) or "nearest" (as
            ``F.interpolate(..., mode="nearest")``). Source cells and weights are PyTorch's
            for float32 (and float16 / bfloat16) features, see :func:`nearest_source_index`
            and :func:`linear_source_weights`; on float64 input PyTorch's CPU kernels use
            float64 positions, which can pick the neighbouring cell where i·in/out is whole.

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
    values, index, counts = _distinct(seg)
    has_background = bool(values.numel()) and int(values[0]) == 0
    ids, area = values[int(has_background) :], counts[int(has_background) :]  # (N,)
    num = ids.shape[0]
    rows = index - 1 if has_background else index  # (T, H, W) int64
    rows.masked_fill_(rows < 0, num)

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
    vectors = sums[:num] / area.unsqueeze(1).float()
    return PooledMasklets(ids=ids, vectors=vectors, area=area)
