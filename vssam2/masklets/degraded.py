"""Oracle masklets degraded at set rates: masklet sources of controlled quality.

The oracle (:class:`~vssam2.masklets.oracle.OracleSource`) gives class-pure masklets, where the
majority vote can only help. Real sources are not pure: a SAM2 masklet may cover two objects,
stop halfway across one, or spill over its outline. :class:`DegradedOracleSource` adds exactly
these faults to the oracle's masklets, each at its own rate, so that a refinement rule that
decides per masklet whether to trust it (a quality gate, a learned fusion) has a real question
to answer, with a known answer: which masklets were degraded, and how.

Every decision is drawn once per oracle masklet from a stream seeded by ``(seed, video name)``
and the masklet's id (:func:`vssam2.synthetic.video_rng`), so a masklet is degraded the same way
in every frame it appears in, and streaming a video chunk by chunk gives the maps of one big
chunk.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from vssam2.masklets.base import MaskletSource
from vssam2.masklets.oracle import OracleSource
from vssam2.synthetic import video_rng

__all__ = ["DegradedOracleSource"]

# Per-masklet draws come in blocks of this many ids, each block from its own stream: the draws of
# an id never depend on how many ids the video has or in which chunk the id first appears.
_BLOCK = 256
# Columns of the per-masklet draws.
_MERGE, _SPLIT, _LEAK, _ANGLE = range(4)


def _contacts(ids: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of different masklets within ``reach`` pixels (Chebyshev) of each other in one frame.

    Args:
        ids: (H, W) int masklet ids, 0 = none.
        reach: largest offset between two pixels that counts as contact (>= 1); 2 bridges the
            one-pixel void bands that ground truth leaves around some objects.

    Returns:
        ``(a, b, count)``: int64 arrays, one row per ordered pair (both directions), with the
        number of pixel pairs in contact.
    """
    h, w = ids.shape
    codes = []
    num = int(ids.max()) + 1
    # Half of the offsets: the other half gives the same pairs in the other direction.
    for dy in range(reach + 1):
        for dx in range(-reach, reach + 1):
            if dy == 0 and dx <= 0:
                continue
            a = ids[: h - dy, max(0, -dx) : w - max(0, dx)]
            b = ids[dy:, max(0, dx) : w - max(0, -dx)]
            touch = (a > 0) & (b > 0) & (a != b)
            pa, pb = a[touch].astype(np.int64), b[touch].astype(np.int64)
            codes.append(pa * num + pb)
            codes.append(pb * num + pa)
    if not codes:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    pair, count = np.unique(np.concatenate(codes), return_counts=True)
    a, b = np.divmod(pair, num)
    return a, b, count.astype(np.int64)


def _grow(array: np.ndarray, size: int, fill: Any) -> np.ndarray:
    """`array` extended to at least `size` entries (doubling), new entries `fill`."""
    if size <= len(array):
        return array
    extra = max(size, 2 * len(array)) - len(array)
    return np.concatenate([array, np.full(extra, fill, dtype=array.dtype)])


class DegradedOracleSource(MaskletSource):
    """Oracle masklets (GT connected components, linked over frames) with controlled faults.

    Each oracle masklet independently, with its own persistent draws:

    - **merge** (probability ``merge_rate``): the first time it lies within ``merge_reach``
      pixels of a masklet of another GT class that is not merged yet, the two become one
      masklet (the one with the longest contact; the merged masklet keeps the first's id) in
      that frame and every later frame where either exists. A masklet is in at most one pair,
      so up to twice ``merge_rate`` of the masklets end up merged (fewer where no free
      neighbour of another class ever touches them).
    - **split** (``split_rate``): cut in two by a line through its centroid in each frame, at a
      random angle fixed for the masklet; each side is a masklet of its own. A merged pair is
      cut by the draw of the masklet whose id it keeps.
    - **leak** (``leak_rate``): grows by ``leak_px`` pixels (Euclidean, within each frame) over
      the neighbouring masklets that do not leak themselves, overwriting them (a small one may
      vanish); a pixel within reach of several goes to the nearest. Leaking masklets never eat
      each other, so ``leak_rate`` 1 changes nothing: about 0.3 leaves most masklets with a
      leaking neighbour. Both sides of a split masklet leak together.

    Faults apply in that order (merge, split, leak); ignore pixels (and the oracle's removed
    small components) stay 0 throughout. With every rate 0 the maps equal the oracle's exactly.

    Args:
        merge_rate: chance per masklet to merge with an adjacent masklet of another class, [0, 1].
        split_rate: chance per masklet to be cut in two, [0, 1].
        leak_rate: chance per masklet to leak into its neighbours, [0, 1].
        leak_px: how far a leaking masklet spills, in pixels (>= 0; 0 = no leak).
        seed: seeds the draws, with the video name and the masklet id.
        merge_reach: pixels between two masklets that still count as adjacent for a merge (>= 1).
        connectivity: the oracle's component neighbourhood, 4 or 8.
        temporal: the oracle links components across frames (False = new ids every frame, so
            every frame's components are drawn anew).
        min_area: the oracle drops components with fewer pixels (in their frame).

    Needs ``gt`` in every chunk. Ids are unique within a video and start at 1; 0 = no masklet.
    """

    name = "degraded_oracle"

    def __init__(
        self,
        merge_rate: float = 0.0,
        split_rate: float = 0.0,
        leak_rate: float = 0.0,
        leak_px: int = 4,
        seed: int = 0,
        merge_reach: int = 2,
        connectivity: int = 8,
        temporal: bool = True,
        min_area: int = 0,
    ) -> None:
        super().__init__()
        for field, value in (("merge_rate", merge_rate), ("split_rate", split_rate), ("leak_rate", leak_rate)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"DegradedOracleSource: {field} must be a number in [0, 1], got {value!r}")
        for field, value, low in (("leak_px", leak_px, 0), ("seed", seed, 0), ("merge_reach", merge_reach, 1)):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"DegradedOracleSource: {field} must be an integer >= {low}, got {value!r}")
        if connectivity not in (4, 8):
            raise ValueError(f"DegradedOracleSource: connectivity must be 4 or 8, got {connectivity!r}")
        if int(min_area) != min_area or min_area < 0:
            raise ValueError(f"DegradedOracleSource: min_area must be an integer >= 0, got {min_area!r}")
        self.merge_rate = float(merge_rate)
        self.split_rate = float(split_rate)
        self.leak_rate = float(leak_rate)
        self.leak_px = int(leak_px)
        self.seed = int(seed)
        self.merge_reach = int(merge_reach)
        self.oracle = OracleSource(connectivity=connectivity, temporal=temporal, min_area=min_area)
        self._reset()

    def config(self) -> dict[str, Any]:
        return {
            "merge_rate": self.merge_rate,
            "split_rate": self.split_rate,
            "leak_rate": self.leak_rate,
            "leak_px": self.leak_px,
            "seed": self.seed,
            "merge_reach": self.merge_reach,
            **self.oracle.config(),
        }

    def _reset(self) -> None:
        self._draws = np.zeros((0, 4), np.float64)  # (ids, 4) per oracle id: merge, split, leak, angle
        self._rep = np.zeros(1, np.int64)  # oracle id -> the oracle id whose masklet it is part of
        self._paired = np.zeros(1, bool)  # oracle id already in a merged pair
        self._out = np.zeros(2, np.int64)  # code 2·rep + side -> output id (0 = not given yet)
        self._next_out = 1

    def _begin(self) -> None:
        self._reset()
        self.oracle.begin_video(self._video or "", *self._size)

    def _end(self) -> None:
        self.oracle.end_video()
        self._reset()

    def _ensure(self, max_id: int) -> None:
        """Grows the per-id state to cover oracle ids 0…max_id."""
        while len(self._draws) <= max_id:
            block = len(self._draws) // _BLOCK
            draws = video_rng(self.seed, "degraded_oracle", self._video or "", block).random((_BLOCK, 4))
            self._draws = np.concatenate([self._draws, draws])
        size = len(self._rep)
        self._rep = _grow(self._rep, max_id + 1, 0)
        self._rep[size:] = np.arange(size, len(self._rep))
        self._paired = _grow(self._paired, max_id + 1, False)
        self._out = _grow(self._out, 2 * (max_id + 1), 0)

    def _merge(self, ids: np.ndarray, gt: np.ndarray) -> None:
        """Pairs this frame's free merging masklets with a touching free one of another class."""
        present = np.flatnonzero(np.bincount(ids.reshape(-1)))
        present = present[present > 0]
        starters = present[(self._draws[present, _MERGE] < self.merge_rate) & ~self._paired[present]]
        if not starters.size:
            return
        a, b, count = _contacts(ids, self.merge_reach)
        if not a.size:
            return
        cls = np.full(len(self._rep), -1, np.int64)
        cls[ids.reshape(-1)] = gt.reshape(-1)  # oracle masklets are class-pure
        # Longest contact first, then the lower id: deterministic partners.
        order = np.lexsort((b, -count))
        a, b = a[order], b[order]
        for k in starters.tolist():  # increasing id
            if self._paired[k]:
                continue  # taken as a partner earlier in this frame
            candidates = b[(a == k) & (cls[b] != cls[k]) & ~self._paired[b]]
            if candidates.size:
                partner = int(candidates[0])
                self._rep[partner] = k
                self._paired[k] = self._paired[partner] = True

    def _degrade(self, ids: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """One frame: (H, W) oracle ids and GT → (H, W) int32 degraded ids."""
        self._ensure(int(ids.max()))
        if self.merge_rate > 0:
            self._merge(ids, gt)
        rep = self._rep[ids]  # (H, W) int64, 0 stays 0
        covered = rep > 0
        code = 2 * rep
        if self.split_rate > 0:
            cut = covered & (self._draws[rep, _SPLIT] < self.split_rate)
            if cut.any():
                yy, xx = np.nonzero(cut)
                owner = rep[cut]
                bins = len(self._rep)
                pixels = np.bincount(owner, minlength=bins).clip(min=1)
                cy = np.bincount(owner, weights=yy, minlength=bins) / pixels
                cx = np.bincount(owner, weights=xx, minlength=bins) / pixels
                angle = math.pi * self._draws[owner, _ANGLE]
                side = (xx - cx[owner]) * np.cos(angle) + (yy - cy[owner]) * np.sin(angle) < 0
                code[yy, xx] += side
        # Output ids in order of first appearance (ascending code within a frame): with no fault
        # these are exactly the oracle's ids, which it also hands out that way.
        codes = np.flatnonzero(np.bincount(code[covered], minlength=len(self._out)))
        fresh = codes[self._out[codes] == 0]
        self._out[fresh] = self._next_out + np.arange(fresh.size)
        self._next_out += int(fresh.size)
        out = np.where(covered, self._out[code], 0)
        if self.leak_rate > 0 and self.leak_px > 0:
            leaking = covered & (self._draws[rep, _LEAK] < self.leak_rate)
            if leaking.any() and (covered & ~leaking).any():
                distance, (rows, cols) = ndimage.distance_transform_edt(~leaking, return_indices=True)
                spill = covered & ~leaking & (distance <= self.leak_px)
                out[spill] = out[rows[spill], cols[spill]]
        return out.astype(np.int32)

    def _segment(self, frames: torch.Tensor, start: int, gt: torch.Tensor | None) -> torch.Tensor:
        if gt is None:
            raise ValueError(
                f"{type(self).__name__} ({self.name!r} source) needs the ground truth: pass gt= to add_chunk"
            )
        oracle = self.oracle.add_chunk(frames, start, gt).numpy()  # (T, H, W) int32
        gt_np = gt.detach().cpu().numpy()
        out = np.empty(oracle.shape, np.int32)
        for t in range(oracle.shape[0]):
            out[t] = self._degrade(oracle[t], gt_np[t])
        return torch.from_numpy(out)
