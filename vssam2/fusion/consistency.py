"""Exact mVC_n of any per-masklet decision, from window signatures of the masklet rows.

mVC_n (Eq. 4) asks, per window of n frames, which GT-stable pixels are pred-stable. A
refined pixel's value in frame t is ``paint[row_t]`` when its masklet row ``row_t`` is painted
and the base's ``base_t`` otherwise, so its pred-stability under any decision is fixed by its
*signature*: the n (row, base) pairs of the window. Pixels with one signature behave alike,
so each window is stored as its distinct signatures with pixel counts, and the exact window
scores of any decision follow without a pixel map (docs/refinement.md, "Exact consistency"):
the temporal counterpart of the joint histogram of :mod:`vssam2.fusion.gains`.

Pixels outside every masklet in all n frames cannot change: they are counted once per
window (``fixed``: GT-stable and base-stable) and not stored.

At VSPW's size a video holds about a million signatures (≈ 40 MB); ``stride`` keeps every
s-th window and ``pixel_step`` every p-th pixel of each axis, and the scores then estimate mVC_n
on that sample (the synthetic study keeps every window and pixel, which is exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from vssam2.metrics.config import VCWindows


@dataclass
class WindowSignatures:
    """The distinct (row, base) signatures of the GT-stable pixels of one video's windows.

    Attributes:
        rows: (S, n) int32 masklet row of each frame of the window (−1 = outside every masklet).
        base: (S, n) uint8 base id of each frame.
        count: (S,) int64 GT-stable pixels with this signature.
        window: (S,) int32 window index (window w covers frames w … w + n − 1).
        stable: (W,) int64 GT-stable pixels of each window.
        fixed: (W,) int64 GT-stable pixels outside every masklet that the base keeps stable.
        last: (1,) int64 the stored window that ends on the video's last frame (−1 = none;
            the reference scripts do not score it).
    """

    rows: np.ndarray
    base: np.ndarray
    count: np.ndarray
    window: np.ndarray
    stable: np.ndarray
    fixed: np.ndarray
    last: np.ndarray

    ARRAYS: ClassVar[tuple[str, ...]] = (
        "vc_rows",
        "vc_base",
        "vc_count",
        "vc_window",
        "vc_stable",
        "vc_fixed",
        "vc_last",
    )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The cache arrays (``vc_*``)."""
        values = (self.rows, self.base, self.count, self.window, self.stable, self.fixed, self.last)
        return dict(zip(self.ARRAYS, values))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> WindowSignatures:
        """Reads the ``vc_*`` arrays of a cache file."""
        return cls(*(np.asarray(arrays[name]) for name in cls.ARRAYS))


class SignatureBuilder:
    """Builds one video's :class:`WindowSignatures` chunk by chunk (frames in order).

    The last n − 1 frames of each chunk are carried over, so windows that span two chunks are
    counted like any other, and any chunking gives the same signatures as the whole video.

    Args:
        n: window length in frames (the mVC_n the calibration guards).
        stride: keep every stride-th window (1 = all: exact).
        pixel_step: keep every pixel_step-th row and column (1 = all: exact).
    """

    def __init__(self, n: int, stride: int = 1, pixel_step: int = 1) -> None:
        if n < 2:
            raise ValueError(f"consistency window must be ≥ 2 frames, got {n}")
        if stride < 1 or pixel_step < 1:
            raise ValueError(f"consistency stride and pixel_step must be ≥ 1, got {stride} and {pixel_step}")
        self.n, self.stride, self.pixel_step = n, stride, pixel_step
        self._windows = 0  # windows seen, kept or not
        self._carry: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._stable: list[int] = []
        self._fixed: list[int] = []

    def add(self, rows: torch.Tensor, base: torch.Tensor, gt: torch.Tensor) -> None:
        """Adds a chunk: rows (T, H, W) int video-wide masklet rows (−1 = none), base and GT ids."""
        step = self.pixel_step
        r = rows[:, ::step, ::step].cpu().numpy().astype(np.int32)
        b = base[:, ::step, ::step].cpu().numpy().astype(np.uint8)
        g = gt[:, ::step, ::step].cpu().numpy().astype(np.uint8)
        if self._carry is not None:
            r, b, g = (np.concatenate([c, x]) for c, x in zip(self._carry, (r, b, g)))
        n = self.n
        for s in range(r.shape[0] - n + 1):
            if self._windows % self.stride == 0:
                self._window(r[s : s + n], b[s : s + n], g[s : s + n])
            self._windows += 1
        keep = slice(max(r.shape[0] - (n - 1), 0), None)
        self._carry = (r[keep], b[keep], g[keep])

    def _window(self, r: np.ndarray, b: np.ndarray, g: np.ndarray) -> None:
        index = len(self._stable)
        gt_stable = (g == g[0]).all(axis=0)  # (H, W): ignore is not masked (Eq. 4 as the scripts)
        rows, base = r[:, gt_stable], b[:, gt_stable]  # (n, P)
        outside = (rows < 0).all(axis=0)
        self._stable.append(int(gt_stable.sum()))
        self._fixed.append(int((base[:, outside] == base[:1, outside]).all(axis=0).sum()))
        rows, base = rows[:, ~outside], base[:, ~outside]
        if rows.shape[1] == 0:
            return
        # One masklet row and one base id over the whole window is the common case: group those
        # by a 1-D code, and only the rest by their full signature.
        simple = (rows == rows[:1]).all(axis=0) & (base == base[:1]).all(axis=0)
        code = rows[0, simple].astype(np.int64) * 256 + base[0, simple]
        values, counts = np.unique(code, return_counts=True)
        sig_rows = [np.repeat((values // 256).astype(np.int32)[:, None], self.n, axis=1)]
        sig_base = [np.repeat((values % 256).astype(np.uint8)[:, None], self.n, axis=1)]
        sig_count = [counts.astype(np.int64)]
        if (~simple).any():
            full = np.concatenate([rows[:, ~simple], base[:, ~simple].astype(np.int32)]).T  # (P', 2n)
            unique, counts = np.unique(full, axis=0, return_counts=True)
            sig_rows.append(unique[:, : self.n].astype(np.int32))
            sig_base.append(unique[:, self.n :].astype(np.uint8))
            sig_count.append(counts.astype(np.int64))
        count = np.concatenate(sig_count)
        self._parts.append(
            (np.concatenate(sig_rows), np.concatenate(sig_base), count, np.full(count.shape[0], index, np.int32))
        )

    def result(self) -> WindowSignatures:
        """The video's signatures (call once the last chunk is added)."""
        n = self.n
        if self._parts:
            rows, base, count, window = (np.concatenate(p) for p in zip(*self._parts))
        else:
            rows, base = np.zeros((0, n), np.int32), np.zeros((0, n), np.uint8)
            count, window = np.zeros(0, np.int64), np.zeros(0, np.int32)
        final = self._windows - 1  # the window ending on the last frame, if it was kept
        last = len(self._stable) - 1 if self._windows and final % self.stride == 0 else -1
        stable, fixed = np.asarray(self._stable, np.int64), np.asarray(self._fixed, np.int64)
        return WindowSignatures(rows, base, count, window, stable, fixed, np.asarray([last], np.int64))


def window_scores(signatures: WindowSignatures, paint: torch.Tensor, windows: VCWindows = "scripts") -> np.ndarray:
    """Exact window scores of the refined video a decision gives.

    Args:
        signatures: the video's signatures.
        paint: (K,) int64 class painted on each masklet row of the video, −1 = keep the base.
        windows: "scripts" drops the window that ends on the video's last frame (T − n windows,
            the reference scripts); "paper" keeps it.

    Returns:
        (W,) float64 |GT-stable ∧ pred-stable| / |GT-stable| per window, NaN without GT-stable
        pixels; pool them over videos with ``np.nanmean`` for mVC_n.
    """
    paint_np = paint.cpu().numpy().astype(np.int64)
    rows = signatures.rows.astype(np.int64)
    painted = np.where(rows >= 0, paint_np[np.clip(rows, 0, None)] if paint_np.size else -1, -1)
    pred = np.where(painted >= 0, painted, signatures.base.astype(np.int64))  # (S, n)
    stable = (pred == pred[:, :1]).all(axis=1)
    num = signatures.stable.shape[0]
    both = signatures.fixed + np.bincount(signatures.window[stable], signatures.count[stable], num).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(signatures.stable > 0, both / np.maximum(signatures.stable, 1), np.nan)
    if windows == "scripts":
        scores = np.delete(scores, [int(i) for i in signatures.last if i >= 0])
    elif windows != "paper":
        raise ValueError(f"windows must be 'scripts' or 'paper', got {windows!r}")
    return scores


def consistency_gains(
    signatures: WindowSignatures,
    candidates: torch.Tensor,
    window_weight: np.ndarray,
) -> torch.Tensor:
    """First-order gain in (weighted) stable window-pixels of every action of every masklet row.

    The gain of painting candidate j on row m is the change in GT-stable pixels that are
    pred-stable when m alone is painted and every other row keeps the base: negative where m's
    paint would flicker against the base on the frames where the pixel leaves m (the cost the
    pixel gains cannot see), positive where it steadies a flickering base. Keeping the base
    gains 0. Being first order, it charges each of two neighbouring masklets painted alike for
    the boundary they would share: the term errs towards the base, which is the side the
    refinement's mVC_n must not fall below.

    Args:
        signatures: one video's signatures.
        candidates: (K, k) int64 candidate classes of the video's rows, −1 = none.
        window_weight: (W,) weight of one stable pixel of each window (0 = not scored).

    Returns:
        (K, 1 + k) float64 gains (0 for keep and for actions without a candidate).
    """
    num, k = candidates.shape
    gains = np.zeros((num, 1 + k), dtype=np.float64)
    if not signatures.count.size or not num:
        return torch.from_numpy(gains)
    rows = signatures.rows.astype(np.int64)  # (S, n)
    base = signatures.base.astype(np.int64)
    weight = signatures.count * window_weight[signatures.window]  # (S,)
    base_stable = (base == base[:, :1]).all(axis=1)
    cand = candidates.cpu().numpy()
    n = rows.shape[1]
    for j in range(n):
        row = rows[:, j]
        # each distinct row of a signature once: at its first frame in the window
        first = (row >= 0) & ~(rows[:, :j] == row[:, None]).any(axis=1)
        if not first.any():
            continue
        sig_rows, sig_base, sig_weight, m = rows[first], base[first], weight[first], row[first]
        sig_stable = base_stable[first].astype(np.float64)
        for i in range(k):
            colour = cand[m, i]
            has = colour >= 0
            pred = np.where(sig_rows == m[:, None], colour[:, None], sig_base)
            stable = (pred == pred[:, :1]).all(axis=1).astype(np.float64)
            delta = np.where(has, (stable - sig_stable) * sig_weight, 0.0)
            np.add.at(gains[:, 1 + i], m, delta)
    return torch.from_numpy(gains)
