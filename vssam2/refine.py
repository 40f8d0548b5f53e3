"""SAM2 as refiner: majority vote of a base prediction inside each masklet (Eq. 1–2).

Each masklet m_i takes the class c_i that the base prediction S assigns to most of its pixels
(Eq. 2); pixels in a masklet get c_i, all others keep S (Eq. 1). Votes are counted over all
the frames passed in (a chunk, or a whole window), with one histogram for all masklets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vssam2.labels import IGNORE_INDEX, NUM_CLASSES
from vssam2.metrics.functional import check_label_range


# Above this many (id, class) histogram bins, sparse ids are compacted before voting.
MAX_DIRECT_BINS: int = 1 << 25


def _as_torch(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


@dataclass
class VoteResult:
    """What the vote decided, per masklet id present in the segment map.

    Attributes:
        ids: (K,) masklet ids (> 0), increasing.
        winner: (K,) int64 winning class (``ignore_index`` where the masklet kept the base).
        share: (K,) float64 share of the masklet's voting pixels that voted for the winner.
        area: (K,) int64 pixels of the masklet.
        applied: (K,) bool whether the masklet overwrote the base prediction.
    """

    ids: torch.Tensor
    winner: torch.Tensor
    share: torch.Tensor
    area: torch.Tensor
    applied: torch.Tensor


def majority_vote(
    segments: torch.Tensor,
    base: torch.Tensor,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
    min_area: int = 0,
    min_share: float = 0.0,
    return_votes: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, VoteResult]:
    """Refines a base prediction with masklets by majority vote (Eq. 1–2).

    Args:
        segments: (..., H, W) int segment map, 0 = no masklet; the same id in several frames
            is one masklet and votes over all of them.
        base: (..., H, W) base prediction, ids 0…C−1 or ``ignore_index`` ("no prediction").
        num_classes: C.
        ignore_index: base pixels with this value do not vote (and stay as they are outside
            masklets).
        min_area: masklets with fewer pixels keep the base prediction.
        min_share: a masklet whose winning class has a smaller share of its voting pixels
            keeps the base prediction (0 = always apply, as in the paper).
        return_votes: also return the per-masklet :class:`VoteResult`.

    Returns:
        (..., H, W) refined prediction with the dtype of ``base``; with ``return_votes``, a
        tuple (refined, votes).

    Ties go to the lowest class id (deterministic). A masklet none of whose pixels has a
    base prediction keeps the base (255) there.
    """
    if segments.shape != base.shape:
        raise ValueError(f"segments and base shapes differ: {tuple(segments.shape)} vs {tuple(base.shape)}")
    if segments.is_floating_point() or base.is_floating_point():
        raise TypeError("segments and base must hold integer ids")
    if segments.numel() and int(segments.min()) < 0:
        raise ValueError("segment ids must be >= 0 (0 = no masklet)")
    check_label_range(base, num_classes, "base prediction", ignore_index)

    on_cpu = segments.device.type == "cpu"
    # Per-pixel passes go through numpy on CPU: torch's CPU kernels for int gathers and
    # widening arithmetic are 2× slower here. torch.bincount is the faster histogram on both.
    seg = segments.reshape(-1)
    seg = seg.numpy().astype(np.int32, copy=False) if on_cpu else seg.to(torch.int32)
    flat_base = base.reshape(-1)
    flat_base = flat_base.numpy() if on_cpu else flat_base
    max_id = int(seg.max()) if (seg.size if on_cpu else seg.numel()) else 0
    cls_lut = np.arange(max(256, num_classes + 1, ignore_index + 1), dtype=np.int32)
    cls_lut[ignore_index] = num_classes  # column C of the votes: "does not vote"

    # Ids are used as histogram rows directly; sparse huge ids are compacted first.
    if (max_id + 1) * (num_classes + 1) > MAX_DIRECT_BINS:
        present = torch.bincount(_as_torch(seg)) > 0
        present[0] = True
        row_ids = torch.nonzero(present).squeeze(1)  # (K + 1,) incl. 0 first
        lut = torch.zeros(present.shape[0], dtype=torch.int32)
        lut[row_ids] = torch.arange(row_ids.shape[0], dtype=torch.int32)
        rows = lut.numpy()[seg] if on_cpu else lut.to(seg.device)[seg.long()]
    else:
        row_ids = torch.arange(max_id + 1)
        rows = seg
    num = row_ids.shape[0]
    if on_cpu:
        code = rows * (num_classes + 1) + cls_lut[flat_base]
    else:
        code = rows * (num_classes + 1) + torch.from_numpy(cls_lut).to(seg.device)[flat_base.long()]
    votes = torch.bincount(_as_torch(code), minlength=num * (num_classes + 1)).cpu()
    votes = votes.reshape(num, num_classes + 1)  # (rows, C + 1)

    area = votes.sum(dim=1)
    class_votes = votes[:, :num_classes]
    voting = class_votes.sum(dim=1)
    best, winner = class_votes.max(dim=1)  # first maximum: ties → lowest class id
    share = best.double() / voting.clamp(min=1).double()
    applied = (voting > 0) & (area >= min_area) & (share >= min_share)
    applied[0] = False  # "no masklet" never overwrites
    keep_base = num_classes + 256  # a value no class or ignore id takes
    painted = torch.where(applied, winner, torch.full_like(winner, keep_base)).to(torch.int16)  # (rows,)

    if on_cpu:
        per_pixel = painted.numpy()[rows]
        refined = torch.from_numpy(np.where(per_pixel != keep_base, per_pixel, flat_base).astype(base.numpy().dtype))
    else:
        per_pixel = painted.to(seg.device)[rows.long()]
        refined = torch.where(per_pixel != keep_base, per_pixel, flat_base.to(torch.int16)).to(base.dtype)
    refined = refined.reshape(base.shape)
    present_rows = area > 0
    present_rows[0] = False
    ids = row_ids[present_rows]
    if not return_votes:
        return refined
    result = VoteResult(
        ids=ids,
        winner=torch.where(applied, winner, torch.full_like(winner, ignore_index))[present_rows],
        share=share[present_rows],
        area=area[present_rows],
        applied=applied[present_rows],
    )
    return refined, result
