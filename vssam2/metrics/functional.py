"""Pure functional core of the VSS metrics (no state, no distributed logic).

Definitions are pinned in docs/metrics.md; the Metric classes in this package
only accumulate what these functions return. Label maps are evaluation ids: 0…C−1 are
classes, 255 is "ignore" in the ground truth and "no prediction" in a prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from vssam2 import label_kernels
from vssam2.host_kernels import compiled_kernels, host_kernels
from vssam2.labels import IGNORE_INDEX, out_of_range_ids
from vssam2.parallel import run_all

#: mVC window count: "scripts" (T − n windows per video) or "paper" (T − n + 1).
VCWindows = Literal["scripts", "paper"]


def as_label_map(x: torch.Tensor, name: str) -> torch.Tensor:
    """Returns ``x`` as a (N, H, W) integer label map; a single (H, W) map gets N = 1.

    Raises:
        TypeError: if ``x`` is not an integer tensor.
        ValueError: if ``x`` is not 2-D or 3-D.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of label ids, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer label ids, got dtype {x.dtype} (take argmax of logits first)")
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        raise ValueError(f"{name}: expected shape (N, H, W) or (H, W), got {tuple(x.shape)}")
    return x


def not_equal(x: torch.Tensor, value: int) -> torch.Tensor:
    """``x != value`` as a bool tensor.

    On CPU, torch compares a uint8 tensor with a Python scalar through a slow broadcast kernel,
    so CPU tensors go through their numpy view.
    """
    if host_kernels(x):
        return torch.from_numpy(x.numpy() != value)
    return x != value


def count_true(mask: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool → (N,) int64 number of True per image, for the torch kernels (the host
    kernels count with numpy inside their own loops). The uint8 view is summed into int32,
    which cannot overflow for an image (H·W < 2³¹).
    """
    return mask.view(torch.uint8).sum(dim=(1, 2), dtype=torch.int32).long()


def check_label_range(x: torch.Tensor, num_classes: int, name: str, ignore_index: int = IGNORE_INDEX) -> None:
    """Raises ValueError if ``x`` holds ids outside 0…num_classes−1 that are not ``ignore_index``."""
    if host_kernels(x):
        values = out_of_range_ids(x.numpy(), num_classes - 1, ignore_index)
    else:
        bad = ((x < 0) | (x >= num_classes)) & (x != ignore_index)
        values = torch.unique(x[bad])[:10].tolist() if bool(bad.any()) else []
    if values:
        raise label_range_error(name, num_classes, ignore_index, values)


def label_range_error(name: str, num_classes: int, ignore_index: int, values: list[int]) -> ValueError:
    """The error for label ids ``values`` of map ``name`` outside 0…num_classes−1 and ``ignore_index``."""
    return ValueError(f"{name}: label ids out of range (allowed 0..{num_classes - 1} and {ignore_index}): {values}")


def check_pair(
    preds: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    check_values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validates a prediction/ground-truth pair and returns both as (N, H, W) label maps.

    Args:
        preds, target: label maps.
        num_classes: number of classes.
        ignore_index: ignore / no-prediction id.
        check_values: also check the id range (one pass over each map); a caller that has
            just checked the same tensors passes False.

    Raises:
        TypeError, ValueError: non-integer input, wrong rank, shape mismatch or ids out of range.
    """
    preds = as_label_map(preds, "preds")
    target = as_label_map(target, "target")
    if not check_values:
        return preds, target
    if preds.shape != target.shape:
        raise ValueError(f"preds and target shapes differ: {tuple(preds.shape)} vs {tuple(target.shape)}")
    run_all(  # two independent scans: one per core on the CPU
        [
            lambda: check_label_range(preds, num_classes, "preds", ignore_index),
            lambda: check_label_range(target, num_classes, "target", ignore_index),
        ],
        target.device,
    )
    return preds, target


def _joint_byte_histogram(rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """(256, 256) int64 counts of (rows[i], cols[i]) byte pairs, from two uint8 arrays of one shape.

    A compiled kernel (:func:`vssam2.label_kernels.joint_histogram`): a block of one (GT, pred)
    pair, the bulk of a label map, is counted at once; a plain bincount would stall on the one
    counter a region increments pixel after pixel.
    """
    # numpy's zeros come from calloc: fresh zero pages, faulted in only where counts land
    # (torch.zeros writes all 512 KB, page faults included, on every call).
    joint = np.zeros(256 * 256, dtype=np.int64)
    label_kernels.joint_histogram(np.ravel(rows), np.ravel(cols), joint)
    return torch.from_numpy(joint).view(256, 256)


def confusion_matrix(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Confusion matrix over pixels whose target is not ``ignore_index``.

    A prediction of ``ignore_index`` ("no prediction") lands in an extra last column: it is
    a false negative of the target class and a false positive of no class.

    Args:
        preds: (N, H, W) predicted ids, 0…C−1 or ``ignore_index``.
        target: (N, H, W) ground-truth ids, 0…C−1 or ``ignore_index``.
        num_classes: C.
        ignore_index: the ignore / no-prediction id.

    Returns:
        (C, C + 1) int64: rows are target classes, columns predicted classes + "no prediction".
        Ids are assumed valid (see :func:`check_pair`).
    """
    if max(num_classes, ignore_index) < 256 and target.dtype == preds.dtype == torch.uint8:
        # One joint histogram of (target, pred) byte pairs over all pixels: no boolean gather,
        # no int64 temporaries. Row ignore_index (ignored GT) is dropped; column ignore_index
        # becomes the "no prediction" column. Without the compiled kernels, the torch bincount
        # counts the same pairs.
        if compiled_kernels(target):
            joint = _joint_byte_histogram(target.numpy(), preds.numpy())
        else:
            code = (target.to(torch.int32) << 8) | preds.to(torch.int32)
            joint = torch.bincount(code.reshape(-1), minlength=256 * 256).view(256, 256)
        return torch.cat([joint[:num_classes, :num_classes], joint[:num_classes, ignore_index : ignore_index + 1]], 1)
    valid = target != ignore_index  # (N, H, W) bool
    t = target[valid].long()
    p = preds[valid].long()
    p = torch.where(p == ignore_index, torch.full_like(p, num_classes), p)
    counts = torch.bincount(t * (num_classes + 1) + p, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def confusion_from_histograms(
    preds: torch.Tensor,
    hist: torch.Tensor,
    uncovered: torch.Tensor | None,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Confusion matrix of a masklet painting, from per-masklet GT histograms (no pixel maps).

    Painting masklet m with class p_m puts all its GT pixels of class c into cell (c, p_m), so
    the matrix equals :func:`confusion_matrix` of the painted map without rendering it.

    Args:
        preds: (K,) class painted on each masklet, 0…C−1 or ``ignore_index``.
        hist: (K, ≥C) GT pixel counts per masklet (columns from C on are ignored GT).
        uncovered: (≥C,) GT pixel counts outside every masklet ("no prediction"), or None.
        num_classes: C.
        ignore_index: the "no prediction" id.

    Returns:
        (C, C + 1) int64, as :func:`confusion_matrix`.
    """
    hist = hist[:, :num_classes].long()
    col = torch.where(preds == ignore_index, torch.full_like(preds, num_classes), preds).long()  # (K,)
    confmat = torch.zeros(num_classes + 1, num_classes, dtype=torch.int64, device=hist.device)
    confmat.index_add_(0, col.to(hist.device), hist)  # rows: predicted column; cols: GT class
    confmat = confmat.t().contiguous()  # (C, C + 1)
    if uncovered is not None:
        confmat[:, num_classes] += uncovered[:num_classes].long().to(confmat.device)
    return confmat


def iou_from_confusion(confmat: torch.Tensor) -> torch.Tensor:
    """Per-class IoU = TP / (TP + FP + FN) from a (C, C + 1) confusion matrix.

    Returns:
        (C,) float64, NaN for classes without ground-truth pixels (they are not averaged).
    """
    num_classes = confmat.shape[0]
    confmat = confmat.double()
    tp = confmat[:, :num_classes].diagonal()
    gt_pixels = confmat.sum(dim=1)  # TP + FN, incl. "no prediction"
    predicted = confmat[:, :num_classes].sum(dim=0)  # TP + FP
    iou = tp / (gt_pixels + predicted - tp)
    return torch.where(gt_pixels > 0, iou, torch.full_like(iou, float("nan")))


def mean_iou(confmat: torch.Tensor) -> torch.Tensor:
    """mIoU: mean per-class IoU over classes that have ground-truth pixels (NaN if none)."""
    return torch.nanmean(iou_from_confusion(confmat))


def weighted_iou(confmat: torch.Tensor) -> torch.Tensor:
    """WIoU (frequency-weighted IoU) = Σ_c freq_c · IoU_c, freq_c = GT pixels of c / all valid GT
    pixels (NaN if none)."""
    iou = iou_from_confusion(confmat)
    gt_pixels = confmat.double().sum(dim=1)
    total = gt_pixels.sum()
    if total == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return (gt_pixels / total * torch.nan_to_num(iou, nan=0.0)).sum()


def _window_extreme(x: torch.Tensor, width: int, dim: int, op) -> torch.Tensor:
    """max (or min) over [i − width, i + width] along ``dim``, clipped at the border.

    Repeating the edge values ``width`` times clips the window (a repeated edge value cannot
    change a max or min); then doubling spans 1, 2, 4, … and one overlapping step cover the
    2·width+1 window in O(log width) elementwise ops on the integer tensor itself.
    """
    size = x.shape[dim]
    k = 2 * width + 1
    pad_shape = list(x.shape)
    pad_shape[dim] = width
    runs = torch.cat(
        [x.narrow(dim, 0, 1).expand(pad_shape), x, x.narrow(dim, size - 1, 1).expand(pad_shape)], dim
    )  # size + k − 1 along dim
    span = 1
    while span * 2 <= k:
        length = runs.shape[dim] - span
        runs = op(runs.narrow(dim, 0, length), runs.narrow(dim, span, length))
        span *= 2
    if span < k:
        length = runs.shape[dim] - (k - span)
        runs = op(runs.narrow(dim, 0, length), runs.narrow(dim, k - span, length))
    return runs


def _host_boundary_band(
    target: torch.Tensor, preds: torch.Tensor, width: int, ignore_index: int, band: np.ndarray | None = None
) -> torch.Tensor:
    """(N, 2) int64 (|B|, |{p ∈ B : pred = GT}|) per frame of CPU uint8 maps, by the compiled
    bit-parallel band kernel (:func:`vssam2.label_kernels.boundary_band`); ``band``, a (N, H, W)
    uint8 array, receives the band itself when given."""
    if width < 1:
        raise ValueError(f"boundary width must be >= 1, got {width}")
    frames, height, w = target.shape
    counts = torch.empty(frames, 2, dtype=torch.int64)
    label_kernels.boundary_band(
        np.ascontiguousarray(target.numpy()), np.ascontiguousarray(preds.numpy()),
        frames, height, w, width, ignore_index, counts.numpy(), band,
    )  # fmt: skip
    return counts


def boundary_band(target: torch.Tensor, width: int = 5, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Boundary band of a ground-truth map.

    A valid pixel p is in the band if some pixel q with chessboard distance ≤ ``width`` from p
    carries another GT value (ignore included) — the same set as eroding each class mask
    ``width`` times with a 3×3 structuring element. Pixels outside the image do not count:
    the image border is not a boundary.

    Args:
        target: (N, H, W) ground-truth ids.
        width: band half-width in pixels (≥ 1).
        ignore_index: ignore id; ignore pixels are never in the band.

    Returns:
        (N, H, W) bool.
    """
    if width < 1:
        raise ValueError(f"boundary width must be >= 1, got {width}")
    if compiled_kernels(target) and target.dtype == torch.uint8:
        band = torch.empty(target.shape, dtype=torch.uint8)
        _host_boundary_band(target, target, width, ignore_index, band.numpy())
        return band.view(torch.bool)
    local_max = _window_extreme(_window_extreme(target, width, 2, torch.maximum), width, 1, torch.maximum)
    local_min = _window_extreme(_window_extreme(target, width, 2, torch.minimum), width, 1, torch.minimum)
    return (local_max != local_min) & not_equal(target, ignore_index)


def boundary_agreement(
    preds: torch.Tensor, target: torch.Tensor, width: int = 5, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: |B| and |{p ∈ B : pred = GT}| for the boundary band B of the GT.

    Returns:
        (band, agree): (N,) int64 each.
    """
    if compiled_kernels(target) and target.dtype == preds.dtype == torch.uint8:
        sizes, agree = _host_boundary_band(target, preds, width, ignore_index).unbind(1)
        return sizes, agree
    band = boundary_band(target, width, ignore_index)  # (N, H, W) bool
    return count_true(band), count_true(band & (preds == target))


def boundary_iou_per_image(
    preds: torch.Tensor, target: torch.Tensor, width: int = 5, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Eq. 6 per image: agree / (2|B| − agree); NaN for images with an empty band.

    Returns:
        (N,) float64.
    """
    band, agree = boundary_agreement(preds, target, width, ignore_index)
    band, agree = band.double(), agree.double()
    return agree / (2 * band - agree)  # 0/0 → NaN where |B| = 0


def boundary_confusion_matrix(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, width: int = 5, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Confusion matrix restricted to the GT boundary band (class-mode boundary IoU)."""
    band = boundary_band(target, width, ignore_index)
    banded_target = torch.where(band, target, torch.full_like(target, ignore_index))
    return confusion_matrix(preds, banded_target, num_classes, ignore_index)


def exact_mean(scores: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Mean of per-image / per-window scores (a list state), NaN when there are none.

    ``math.fsum`` is exactly rounded, so the mean does not depend on the order the scores
    arrive in or how they were split over ranks: 1 and N processes agree bit for bit.
    """
    if isinstance(scores, torch.Tensor):  # a list state after a DDP sync is one tensor
        values = scores.reshape(-1)
    else:
        values = torch.cat([s.reshape(-1) for s in scores]) if scores else torch.zeros(0)
    if values.numel() == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return torch.tensor(math.fsum(values.double().tolist()) / values.numel(), dtype=torch.float64)


@dataclass
class StableRuns:
    """Per-pixel run lengths of stable frame pairs, the state mVC_n carries from frame to frame.

    ``gt_run`` counts the consecutive frame pairs ending at the last frame whose GT is equal;
    ``both_run`` those equal in GT and in prediction. Both are capped at ``longest − 1``, so
    for every n ≤ ``longest`` the window of n frames ending at the last frame is GT-stable
    where ``gt_run ≥ n − 1`` and GT- and pred-stable where ``both_run ≥ n − 1``: one frame of
    state instead of n − 1, each frame compared once with the one before whatever n and
    however a video is chunked, and one state serves mVC_8 and mVC_16 together.
    """

    preds: torch.Tensor  # (H, W) last frame's prediction
    target: torch.Tensor  # (H, W) last frame's GT
    gt_run: torch.Tensor  # (H, W) uint8
    both_run: torch.Tensor  # (H, W) uint8
    longest: int  # the longest window length served
    frames: int  # frames seen

    @classmethod
    def start(cls, preds: torch.Tensor, target: torch.Tensor, longest: int) -> StableRuns:
        """The state after a video's first (H, W) frame (no pair yet), for windows up to ``longest``."""
        zeros = torch.zeros(target.shape, dtype=torch.uint8, device=target.device)
        return cls(preds, target, zeros, zeros.clone(), longest, 1)

    def advance(self, preds: torch.Tensor, target: torch.Tensor, lengths: Sequence[int]) -> list[list[tuple[int, int]]]:
        """Takes the next L frames: per frame, each run ← min(run + 1, longest − 1) where the
        pair with the frame before is stable, else 0.

        Args:
            preds, target: (L, H, W) ids of the next L frames, contiguous.
            lengths: window lengths n (each ≤ ``longest``) to count.

        Returns:
            Per frame, per n in ``lengths``: (|GT-stable ∧ pred-stable|, |GT-stable|) of the
            n-frame window ending at that frame (a window only exists once n frames are seen).
        """
        cap = self.longest - 1
        frames = target.shape[0]
        maps = (target, preds, self.target, self.preds)
        if compiled_kernels(target) and all(x.dtype == torch.uint8 for x in maps):
            # One compiled pass over the chunk: a block of the state goes through every frame
            # while in cache, counted against every n on the way.
            counts = np.empty((frames, len(lengths), 2), dtype=np.int64)
            label_kernels.advance_runs(
                target.numpy(), preds.numpy(), frames, self.target.numpy(), self.preds.numpy(),
                self.gt_run.numpy(), self.both_run.numpy(), cap, bytes(n - 1 for n in lengths), counts,
            )  # fmt: skip
            windows = [[(int(both), int(gt)) for both, gt in frame] for frame in counts.tolist()]
        else:
            windows = []
            for before_preds, before_target, frame_preds, frame_target in zip(
                [self.preds, *preds[:-1]], [self.target, *target[:-1]], preds, target
            ):
                same = frame_target == before_target
                self.gt_run.clamp_(max=cap - 1).add_(1).mul_(same.view(torch.uint8))
                same &= frame_preds == before_preds
                self.both_run.clamp_(max=cap - 1).add_(1).mul_(same.view(torch.uint8))
                stable = torch.stack([torch.stack([self.both_run >= n - 1, self.gt_run >= n - 1]) for n in lengths])
                windows.append([tuple(pair) for pair in count_true(stable.flatten(0, 1)).view(-1, 2).tolist()])
        if frames:
            self.preds, self.target = preds[-1], target[-1]
        self.frames += frames
        return windows


def check_window_lengths(lengths: Sequence[int]) -> tuple[int, ...]:
    """Returns the window lengths as a tuple; raises ValueError unless each is in 2…256 (runs are bytes)."""
    lengths = tuple(int(n) for n in lengths)
    if not lengths:
        raise ValueError("video consistency needs at least one window length")
    for n in lengths:
        if not 2 <= n <= 256:
            raise ValueError(f"video consistency needs 2 <= n <= 256 frames (run lengths are bytes), got {n}")
    return lengths


def advance_stable_runs(
    runs: StableRuns | None, preds: torch.Tensor, target: torch.Tensor, lengths: Sequence[int]
) -> tuple[StableRuns | None, dict[int, list[tuple[int, int]]]]:
    """Feeds frames to the run-length state and counts every window they complete.

    Args:
        runs: state after the frames seen so far, or None at the start of a video.
        preds: (L, H, W) predicted ids of the next L frames.
        target: (L, H, W) GT ids of the same frames.
        lengths: window lengths n (each 2…256); one state serves them all.

    Returns:
        The new state (it holds views of the last frame; None while no frame was seen) and, per
        n, per window of n frames
        ending in these frames (in order), (|GT-stable ∧ pred-stable|, |GT-stable|) (Eq. 4;
        ignore is not masked).
    """
    lengths = check_window_lengths(lengths)
    if runs is not None and runs.longest < max(lengths):
        raise ValueError(f"the run-length state serves windows of up to {runs.longest} frames, not {max(lengths)}")
    counts: dict[int, list[tuple[int, int]]] = {n: [] for n in lengths}
    preds, target = preds.contiguous(), target.contiguous()
    if runs is None:
        if target.shape[0] == 0:
            return None, counts
        runs = StableRuns.start(preds[0], target[0], max(lengths))
        preds, target = preds[1:], target[1:]
    seen = runs.frames
    for k, windows in enumerate(runs.advance(preds, target, lengths)):
        for n, window in zip(lengths, windows):
            if seen + k + 1 >= n:  # a window of n frames ends at this frame
                counts[n].append(window)
    return runs, counts


def consistency_window_counts(preds: torch.Tensor, target: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of every n-frame window of an ordered run of frames (Eq. 4).

    A pixel is GT-stable in a window if its GT is equal over the n frames (ignore pixels are
    not masked, as in the reference scripts); likewise pred-stable.

    Args:
        preds: (L, H, W) predicted ids of L consecutive frames.
        target: (L, H, W) GT ids of the same frames.
        n: window length in frames (2…256).

    Returns:
        (both, gt_stable): (L − n + 1,) int64 each (empty if L < n); window s covers frames
        s … s + n − 1. both = |GT-stable ∧ pred-stable|, gt_stable = |GT-stable|.
    """
    _, counts = advance_stable_runs(None, preds, target, (n,))
    table = torch.tensor(counts[n], dtype=torch.int64).reshape(-1, 2)
    return table[:, 0], table[:, 1]


def video_consistency_scores(
    preds: torch.Tensor, target: torch.Tensor, n: int, windows: VCWindows = "scripts"
) -> torch.Tensor:
    """Per-window consistency scores of one whole video (Eq. 4).

    Args:
        preds: (T, H, W) predicted ids, frames in order.
        target: (T, H, W) GT ids.
        n: window length.
        windows: "scripts" — windows start at 0 … T−n−1 (T−n windows, the count of the
            CFFM / MRCFA / TV3S scripts); "paper" — 0 … T−n (T−n+1, the paper's formula).

    Returns:
        (W,) float64 scores, NaN for windows without GT-stable pixels.
    """
    both, gt_stable = consistency_window_counts(preds, target, n)
    if windows == "scripts":
        both, gt_stable = both[:-1], gt_stable[:-1]
    elif windows != "paper":
        raise ValueError(f"windows must be 'scripts' or 'paper', got {windows!r}")
    return both.double() / gt_stable.double()
