"""Overlapping masks → one segment map (the only place where overlaps are resolved)."""

from __future__ import annotations

from typing import Literal

import torch

PaintOrder = Literal["area", "score", "given"]
ORDERS: tuple[PaintOrder, ...] = ("area", "score", "given")


def paint_order(masks: torch.Tensor, scores: torch.Tensor | None = None, order: PaintOrder = "area") -> torch.Tensor:
    """Order in which masks are painted; a later mask overwrites an earlier one where they overlap.

    Args:
        masks: (K, ...) bool masks.
        scores: (K,) scores, required for ``order="score"``.
        order: "area" — decreasing area, so small masks stay visible on top of large ones
            (default); "score" — increasing score, so the best-scored mask wins overlaps;
            "given" — the input order.

    Returns:
        (K,) int64 indices into ``masks``; ties keep the input order (stable sort).
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    num = masks.shape[0]
    if order == "given" or num == 0:
        return torch.arange(num, device=masks.device)
    if order == "area":
        key = -masks.reshape(num, -1).sum(dim=1)  # paint large first
    else:
        if scores is None or scores.shape != (num,):
            raise ValueError(f"order='score' needs a ({num},) score per mask")
        key = scores.float()  # paint low scores first, the best lands on top
    return torch.sort(key, stable=True).indices


def aggregate_masks(
    masks: torch.Tensor,
    ids: torch.Tensor,
    scores: torch.Tensor | None = None,
    order: PaintOrder = "area",
    block: int = 32,
) -> torch.Tensor:
    """Paints overlapping masks into one segment map with a max over paint positions.

    Args:
        masks: (K, ..., H, W) bool; the leading dim indexes masks, the rest is any shape
            (one frame (H, W) or a chunk (T, H, W)).
        ids: (K,) positive int ids to paint.
        scores: (K,) scores for ``order="score"``.
        order: see :func:`paint_order`.
        block: masks reduced at once (bounds the temporary memory; the result does not
            depend on it).

    Returns:
        (..., H, W) int32 map; 0 where no mask covers a pixel, else the id of the mask painted
        last there.
    """
    if masks.shape[0] != ids.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {ids.shape[0]} ids")
    if masks.shape[0] == 0:
        return torch.zeros(masks.shape[1:], dtype=torch.int32, device=masks.device)
    if bool((ids <= 0).any()):
        raise ValueError("masklet ids must be positive (0 means 'no masklet')")
    rank = paint_order(masks, scores, order).to(masks.device)  # rank[j] = mask painted j-th
    position = torch.empty_like(rank)
    position[rank] = torch.arange(1, len(rank) + 1, device=masks.device)  # 1-based paint position per mask
    # Per pixel, the covering mask painted last = the max paint position over masks; masks
    # go in blocks so the (block, ..., H, W) temporary stays small for many masks or frames.
    position = position.to(torch.int32).view(-1, *([1] * (masks.ndim - 1)))
    top = torch.zeros(masks.shape[1:], dtype=torch.int32, device=masks.device)  # (..., H, W), 0 = uncovered
    for begin in range(0, masks.shape[0], block):
        block_top = (masks[begin : begin + block].to(torch.int32) * position[begin : begin + block]).amax(dim=0)
        top = torch.maximum(top, block_top)
    ids = ids.to(masks.device, torch.int32)
    lookup = torch.cat([torch.zeros(1, dtype=torch.int32, device=masks.device), ids[rank]])
    return lookup[top.long()]
