"""SAM2 as refiner: majority vote of a base prediction inside each masklet (Eq. 1–2).

Each masklet m_i takes the class c_i that the base prediction S assigns to most of its pixels
(Eq. 2); pixels in a masklet get c_i, all others keep S (Eq. 1). Votes are counted over all
the frames passed in (a chunk, or a whole window), with one histogram for all masklets: each
pixel's (masklet, base id) pair is one code, row·256 + base id, so one pass counts the votes
of every masklet; a second pass paints each masklet's winner (or keeps the base). On the CPU
both passes are compiled kernels (:mod:`vssam2.label_kernels`) that handle a block of pixels
of one masklet at once; elsewhere, and on a CPU without the compiled kernels, they are a torch
bincount and a gather (same votes, same map).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vssam2 import label_kernels
from vssam2.host_kernels import compiled_kernels, host_kernels
from vssam2.labels import IGNORE_INDEX, NUM_CLASSES
from vssam2.metrics.functional import check_label_range, label_range_error
from vssam2.parallel import map_slices

# Above this many (id, base id) histogram bins, sparse ids are compacted before voting.
MAX_DIRECT_BINS: int = 1 << 25


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


def _max_id(seg: torch.Tensor) -> int:
    """Largest id of a flat int32 id tensor (0 when empty).

    Read as uint32, negative ids lie above every valid one, so one max pass finds the largest
    id and any negative id at once (min and max were two). On the CPU each thread reduces its
    own slice with numpy: torch's parallel reduction leaves its OpenMP threads spinning
    afterwards, taking the cores from the slice workers that follow.

    Raises:
        ValueError: if an id is negative.
    """
    if seg.numel() == 0:
        return 0
    if not host_kernels(seg):
        low, high = (int(v) for v in torch.aminmax(seg))
    else:
        flat = seg.numpy().view(np.uint32)
        high = max(map_slices(flat.size, lambda a, b: int(flat[a:b].max()), seg.device))
        low = -1 if high > np.iinfo(np.int32).max else 0
    if low < 0:
        raise ValueError("segment ids must be >= 0 (0 = no masklet)")
    return high


def _check_voted_ids(votes: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Raises ValueError if any pixel voted for a base id outside 0…C−1 and ``ignore_index``:
    the histogram has a column per byte value, so a uint8 base is checked for free."""
    extra = votes[:, num_classes:].sum(dim=0)  # (256 − C,) pixels per id ≥ C
    extra[ignore_index - num_classes] = 0
    values = (torch.nonzero(extra).flatten() + num_classes)[:10].tolist()
    if values:
        raise label_range_error("base prediction", num_classes, ignore_index, values)


@dataclass
class VoteCounts:
    """Per-pixel vote inputs and the vote histogram of one call (what every rule decides from).

    Counted once per (chunk, base prediction) by :func:`count_votes`; each refinement rule
    then decides one paint id per row and :meth:`paint` renders it, so several rules on the
    same prediction cost one count and one paint each.
    """

    rows: torch.Tensor  # (N,) int32 histogram row of each pixel (its masklet id, or its compacted index)
    base: torch.Tensor  # (N,) base ids, uint8 on the host kernels' path
    row_ids: torch.Tensor  # (rows,) int64 masklet id of each row (row 0 = id 0, "no masklet")
    votes: torch.Tensor  # (rows, 256) int64 pixel counts per (row, base id), on the CPU

    def paint(self, row_paint: torch.Tensor) -> torch.Tensor:
        """(N,) uint8 refined map: ``row_paint[row]`` where that is ≥ 0, else the base id.

        Args:
            row_paint: (rows,) int16 id painted over each row's pixels, −1 = keep the base.
        """
        out = torch.empty(self.rows.shape, dtype=torch.uint8, device=self.rows.device)
        if _on_host_kernels(self.rows, self.base):

            def paint(start: int, stop: int) -> None:
                label_kernels.paint_votes(
                    self.rows[start:stop].numpy(),
                    self.base[start:stop].numpy(),
                    row_paint.numpy(),
                    out[start:stop].numpy(),
                )

        else:
            row_paint = row_paint.to(self.rows.device)

            def paint(start: int, stop: int) -> None:
                painted = row_paint[self.rows[start:stop]]  # (n,) int16, −1 = keep the base
                out[start:stop] = torch.where(painted >= 0, painted, self.base[start:stop])

        map_slices(out.numel(), paint, out.device)
        return out


def _on_host_kernels(rows: torch.Tensor, base: torch.Tensor) -> bool:
    """Whether the compiled label-map kernels count and paint these (int32 rows, uint8 base)."""
    return compiled_kernels(rows) and rows.dtype == torch.int32 and base.dtype == torch.uint8


def count_votes(segments: torch.Tensor, base: torch.Tensor, num_classes: int, ignore_index: int) -> VoteCounts:
    """Histogram of base ids per masklet (rows: masklet ids, or their compacted indices).

    Args:
        segments: (..., H, W) int segment map, 0 = no masklet.
        base: (..., H, W) ids 0…C−1 or ``ignore_index``.
        num_classes: C.
        ignore_index: the ignore id (counted in its own column, it does not vote).

    Raises:
        ValueError / TypeError: shapes differ, float inputs, negative or too large ids, base
            ids outside 0…C−1 and ``ignore_index``.
    """
    if segments.shape != base.shape:
        raise ValueError(f"segments and base shapes differ: {tuple(segments.shape)} vs {tuple(base.shape)}")
    if segments.is_floating_point() or base.is_floating_point():
        raise TypeError("segments and base must hold integer ids")
    if not (num_classes <= ignore_index <= 255):
        raise ValueError(
            f"need num_classes <= ignore_index <= 255 (ids travel as bytes), got {num_classes}, {ignore_index}"
        )
    if base.dtype != torch.uint8:  # a uint8 base is checked on its vote histogram, for free
        check_label_range(base, num_classes, "base prediction", ignore_index)
    seg = segments.reshape(-1)
    if seg.dtype == torch.int64 and seg.numel():
        # Checked before narrowing, where out-of-range ids would wrap to valid ones; this scan
        # also gives the largest id.
        low, max_id = (int(v) for v in torch.aminmax(seg))
        if low < 0:
            raise ValueError("segment ids must be >= 0 (0 = no masklet)")
        if max_id > np.iinfo(np.int32).max:
            raise ValueError(f"segment ids must be < 2**31, got {max_id}")
        seg = seg.to(torch.int32)
    else:
        seg = seg if seg.dtype == torch.int32 else seg.to(torch.int32)
        max_id = _max_id(seg)
    flat_base = base.reshape(-1)
    # Every id is below 256 by now: the host kernels take bytes (torch's code ORs them into the
    # int32 rows as well, when the compiled kernels are missing), torch's code elsewhere int32.
    wanted = torch.uint8 if host_kernels(seg) else torch.int32
    flat_base = flat_base if flat_base.dtype in (torch.uint8, wanted) else flat_base.to(wanted)

    # Ids are used as histogram rows directly; sparse huge ids are compacted first.
    if (max_id + 1) * 256 > MAX_DIRECT_BINS:
        # unique + searchsorted, not a bincount: a bincount would be as long as the largest id.
        row_ids = torch.unique(torch.cat([seg.new_zeros(1), seg]))  # (K + 1,) incl. 0 first
        seg = torch.searchsorted(row_ids, seg, out_int32=True)
        row_ids = row_ids.cpu().long()
    else:
        row_ids = torch.arange(max_id + 1)
    bins = row_ids.shape[0] * 256

    if _on_host_kernels(seg, flat_base):

        def count(start: int, stop: int) -> torch.Tensor:
            hist = np.zeros(bins, dtype=np.int64)  # calloc: only the pages votes land on are touched
            left_out = label_kernels.vote_histogram(seg[start:stop].numpy(), flat_base[start:stop].numpy(), hist)
            if left_out:  # every id is a row by construction (largest id, or compaction)
                raise RuntimeError(f"vote histogram: {left_out} pixels had no row (ids changed during the call?)")
            return torch.from_numpy(hist)

    else:

        def count(start: int, stop: int) -> torch.Tensor:
            # One code per pixel, (row, base id) as row·256 + id: one bincount for all masklets.
            code = torch.bitwise_left_shift(seg[start:stop], 8).bitwise_or_(flat_base[start:stop])
            return torch.bincount(code, minlength=bins)

    votes = torch.stack(map_slices(seg.numel(), count, seg.device)).sum(dim=0).cpu().reshape(-1, 256)
    _check_voted_ids(votes, num_classes, ignore_index)
    return VoteCounts(seg, flat_base, row_ids, votes)


def vote_decision(
    votes: torch.Tensor, num_classes: int, min_area: int = 0, min_share: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 2 on a vote histogram: each row's winning class, or "keep the base".

    Args:
        votes: (rows, ≥C) int64 pixel counts per (row, base id); row 0 is "no masklet".
        num_classes: C; columns from C on (ignore) do not vote.
        min_area: rows with fewer pixels (ignore included) keep the base.
        min_share: rows whose winner has a smaller share of the voting pixels keep the base.

    Returns:
        row_paint: (rows,) int16 winner, −1 = keep the base (row 0, no voting pixel, gated).
        winner: (rows,) int64 winning class (ties → lowest class id), also where not applied.
        share: (rows,) float64 winner's share of the voting pixels.
    """
    area = votes.sum(dim=1)
    class_votes = votes[:, :num_classes]  # the ignore column does not vote
    voting = class_votes.sum(dim=1)
    best, winner = class_votes.max(dim=1)  # first maximum: ties → lowest class id
    share = best.double() / voting.clamp(min=1).double()
    applied = (voting > 0) & (area >= min_area) & (share >= min_share)
    applied[0] = False  # "no masklet" never overwrites
    return torch.where(applied, winner, -1).to(torch.int16), winner, share


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
    counted = count_votes(segments, base, num_classes, ignore_index)
    row_ids, votes = counted.row_ids, counted.votes
    area = votes.sum(dim=1)
    row_paint, winner, share = vote_decision(votes, num_classes, min_area, min_share)
    applied = row_paint >= 0
    refined = counted.paint(row_paint).to(base.dtype).reshape(base.shape)
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


def class_histogram(
    segments: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel counts of each label inside each masklet (the votes of Eq. 2, with any labels).

    Args:
        segments: (..., H, W) int segment map, 0 = no masklet.
        labels: (..., H, W) ids 0…C−1 or ``ignore_index`` (a prediction, or the GT).
        num_classes: C.
        ignore_index: the ignore id, counted in its own column.

    Returns:
        ids: (K,) int64 masklet ids present (> 0), increasing.
        hist: (K, 256) int64 pixel counts per label id (column ``ignore_index`` counts ignore).
    """
    counted = count_votes(segments, labels, num_classes, ignore_index)
    present = counted.votes.sum(dim=1) > 0
    present[0] = False
    return counted.row_ids[present], counted.votes[present]


def masklet_targets(
    hist: torch.Tensor, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Training target of each masklet: its majority GT class (ties → lowest id).

    Args:
        hist: (K, ≥C) GT pixel counts per masklet (:func:`class_histogram` of the GT).
        num_classes: C; columns from C on (ignore) do not vote.
        ignore_index: target of masklets with no valid GT pixel (skipped in training).

    Returns:
        (K,) int64 target class, ``ignore_index`` for ignore-only masklets.
    """
    valid = hist[:, :num_classes]
    best, winner = valid.max(dim=1)
    return torch.where(best > 0, winner, torch.full_like(winner, ignore_index))
