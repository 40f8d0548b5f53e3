"""Exact outcomes of every per-masklet decision, from joint (masklet × base × GT) histograms.

A refined map is fully described, for the confusion matrix, by the joint histogram of
(masklet, base id, GT id) over the chunk's pixels: keeping the base on masklet m puts its
pixels at (GT, base); painting class c puts them all at (GT, c); pixels outside every
masklet stay at (GT, base). So the pixel gain of every action and the exact mIoU / WIoU of
any decision — the vote's, a learned rule's, the per-masklet best — follow from a sparse
histogram without rendering a single map (docs/refinement.md, "Exact gains").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vssam2.labels import IGNORE_INDEX


@dataclass
class JointHistogram:
    """Sparse joint histogram of one chunk (or video): one entry per (row, base, GT) triple.

    Attributes:
        row: (M,) int64 masklet row (index into the statistics' rows), −1 = outside every masklet.
        base: (M,) int64 base id (0…C−1, or ``ignore_index`` = no prediction).
        gt: (M,) int64 GT id (0…C−1, or ``ignore_index``).
        count: (M,) int64 pixels.
    """

    row: torch.Tensor
    base: torch.Tensor
    gt: torch.Tensor
    count: torch.Tensor


def joint_histogram(segments: torch.Tensor, base: torch.Tensor, gt: torch.Tensor, ids: torch.Tensor) -> JointHistogram:
    """The sparse (masklet, base, GT) histogram of a chunk.

    Args:
        segments: (T, H, W) int segment map, 0 = no masklet.
        base: (T, H, W) base ids (< 256).
        gt: (T, H, W) GT ids (< 256).
        ids: (K,) int64 masklet ids, increasing: entry rows index into it; pixels of ids
            not in it count as outside every masklet.
    """
    seg = segments.reshape(-1).long().cpu()
    code = (seg << 16) | (base.reshape(-1).long().cpu() << 8) | gt.reshape(-1).long().cpu()
    values, counts = torch.unique(code, return_counts=True)
    seg_id = values >> 16
    row = torch.full_like(seg_id, -1)
    if ids.numel():
        at = torch.searchsorted(ids, seg_id).clamp(max=ids.shape[0] - 1)
        inside = (seg_id > 0) & (ids[at] == seg_id)
        row = torch.where(inside, at, row)
    return JointHistogram(row, (values >> 8) & 255, values & 255, counts)


def masklet_rows(segments: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(T, H, W) int64 row of each pixel's masklet in ``ids`` (increasing), −1 = none."""
    seg = segments.long().cpu()
    if not ids.numel():
        return torch.full_like(seg, -1)
    at = torch.searchsorted(ids, seg).clamp(max=ids.shape[0] - 1)
    return torch.where((seg > 0) & (ids[at] == seg), at, torch.full_like(at, -1))


def action_gains(
    joint: JointHistogram,
    candidates: torch.Tensor,
    num_classes: int,
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Correct-pixel gain of every action of every masklet, against keeping the base.

    Action 0 keeps the base (gain 0); action j paints candidate j: gain = (weighted) GT pixels
    of that class in the masklet − (weighted) pixels the base already has right there.

    Args:
        joint: the rows' joint histogram (entries with row −1 are ignored).
        candidates: (K, k) int64 candidate classes, −1 = none.
        num_classes: C (GT ids from C on are ignore and count nowhere).
        class_weight: (C,) weight of a correct pixel of each GT class (None = 1: pixel gains).

    Returns:
        (K, 1 + k) float64 gains; −inf for actions without a candidate.
    """
    num = candidates.shape[0]
    weight = torch.ones(num_classes, dtype=torch.float64) if class_weight is None else class_weight.double()
    keep = (joint.row >= 0) & (joint.gt < num_classes)
    row, base, gt, count = joint.row[keep], joint.base[keep], joint.gt[keep], joint.count[keep].double()
    w = weight[gt] * count
    gt_hist = torch.zeros(num, num_classes, dtype=torch.float64)
    gt_hist.index_put_((row, gt), w, accumulate=True)  # (K, C) weighted GT pixels
    correct = torch.zeros(num, dtype=torch.float64)
    correct.index_add_(0, row, torch.where(base == gt, w, torch.zeros_like(w)))
    painted = torch.gather(gt_hist, 1, candidates.clamp(min=0))  # (K, k)
    gains = painted - correct.unsqueeze(1)
    gains = torch.where(candidates >= 0, gains, torch.full_like(gains, float("-inf")))
    return torch.cat([torch.zeros(num, 1, dtype=torch.float64), gains], dim=1)


def decision_confusion(
    joint: JointHistogram,
    paint: torch.Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Exact confusion matrix of the refined map a decision gives.

    Args:
        joint: the joint histogram (rows −1 = outside every masklet, keep the base).
        paint: (K,) int64 class painted on each row, −1 = keep the base.
        num_classes: C.
        ignore_index: the "no prediction" id of the base (its pixels land in column C).

    Returns:
        (C, C + 1) int64, as :func:`vssam2.metrics.functional.confusion_matrix` of that map.
    """
    painted = torch.where(joint.row >= 0, paint[joint.row.clamp(min=0)] if paint.numel() else joint.row, -1)
    pred = torch.where(painted >= 0, painted, joint.base)
    pred = torch.where((pred >= num_classes) | (pred == ignore_index), torch.full_like(pred, num_classes), pred)
    valid = joint.gt < num_classes
    confmat = torch.zeros(num_classes * (num_classes + 1), dtype=torch.int64)
    confmat.index_add_(0, joint.gt[valid] * (num_classes + 1) + pred[valid], joint.count[valid])
    return confmat.reshape(num_classes, num_classes + 1)


def actions_to_paint(actions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(K,) class painted by each action (0 = keep → −1; j → candidate j)."""
    chosen = torch.gather(candidates, 1, (actions - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    return torch.where(actions > 0, chosen, torch.full_like(chosen, -1))
