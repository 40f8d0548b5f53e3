"""Weight-free masklets: per-frame superpixels (SLIC or Felzenszwalb), linked across frames.

Also home of :func:`link_ids`, the IoU linking of one frame's segments to the previous
frame's ids that the superpixel and oracle sources share.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from vssam2.masklets.base import MaskletSource

__all__ = ["METHODS", "SuperpixelSource", "link_ids"]

SuperpixelMethod = Literal["slic", "felzenszwalb"]
METHODS: tuple[SuperpixelMethod, ...] = ("slic", "felzenszwalb")

# Above this many (previous id, new label) bins per pixel the joint histogram is taken with
# np.unique over the pixels' pair codes instead of a dense bincount (bounded memory).
_DENSE_BINS_PER_PIXEL = 4


def link_ids(
    prev_map: np.ndarray | None,
    new_labels: np.ndarray,
    next_id: int,
    iou_thresh: float = 0.5,
    same_class: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, int]:
    """Gives one frame's segments the ids of the previous frame's segments they continue.

    A new segment takes the id of the previous segment it overlaps with the highest IoU when
    that IoU is at least ``iou_thresh``; pairs are taken greedily by decreasing IoU (ties: lower
    previous id, then lower new label), one-to-one. Every other new segment gets a fresh id
    ``next_id, next_id + 1, ...`` in increasing label order. The overlaps come from one joint
    histogram of (previous id, new label) over the pixels; no loop over pixels or segments.

    Args:
        prev_map: (H, W) int ids of the previous frame (0 = no segment), or None (no previous
            frame: every segment is new).
        new_labels: (H, W) non-negative int labels of this frame; 0 = no segment. Labels need
            not be consecutive: only labels that occur get an id.
        next_id: first unused id of the video (positive).
        iou_thresh: minimum IoU of a link, in (0, 1].
        same_class: optional (previous class map, new class map), both (H, W): overlap counts
            only pixels whose two classes agree, so segments that are class-pure link only to
            segments of the same class.

    Returns:
        ``(ids, next_id)``: (H, W) int32 map of ids (0 exactly where ``new_labels`` is 0) and the
        first id still unused afterwards.
    """
    new = np.asarray(new_labels)
    if new.ndim != 2:
        raise ValueError(f"new_labels must be (H, W), got shape {new.shape}")
    if next_id < 1:
        raise ValueError(f"next_id must be positive, got {next_id}")
    if not 0.0 < iou_thresh <= 1.0:
        raise ValueError(f"iou_thresh must be in (0, 1], got {iou_thresh}")
    flat_new = new.reshape(-1).astype(np.int64)
    if flat_new.size and flat_new.min() < 0:
        raise ValueError("new_labels must be non-negative")
    num_new = int(flat_new.max()) + 1 if flat_new.size else 1
    new_area = np.bincount(flat_new, minlength=num_new)
    present = new_area > 0
    present[0] = False
    lut = np.zeros(num_new, np.int64)  # new label -> id
    matched = np.zeros(num_new, bool)

    if prev_map is not None:
        prev = np.asarray(prev_map)
        if prev.shape != new.shape:
            raise ValueError(f"prev_map has shape {prev.shape}, new_labels {new.shape}")
        if same_class is not None and (same_class[0].shape != new.shape or same_class[1].shape != new.shape):
            raise ValueError("same_class maps must have the shape of new_labels")
        if (prev > 0).any() and present.any():
            # Compact the previous ids to 0..P-1 with 0 kept for "no segment": a histogram over
            # the id range when it is small enough (linear time), else a sort.
            flat_prev = prev.reshape(-1).astype(np.int64)
            if flat_prev.min() < 0:
                raise ValueError("prev_map must be non-negative")
            max_prev = int(flat_prev.max())
            if max_prev <= _DENSE_BINS_PER_PIXEL * flat_prev.size:
                occurs = np.bincount(flat_prev, minlength=max_prev + 1) > 0
                occurs[0] = True
                prev_ids = np.flatnonzero(occurs)
                prev_compact = (np.cumsum(occurs) - 1)[flat_prev]
            else:
                prev_ids, prev_compact = np.unique(flat_prev, return_inverse=True)
                prev_compact = prev_compact.reshape(-1)
                if prev_ids[0] != 0:
                    prev_ids = np.concatenate([np.zeros(1, prev_ids.dtype), prev_ids])
                    prev_compact = prev_compact + 1
            num_prev = len(prev_ids)
            prev_area = np.bincount(prev_compact, minlength=num_prev)
            codes = prev_compact * num_new + flat_new
            inside = (prev_compact > 0) & (flat_new > 0)
            if same_class is not None:
                inside &= np.asarray(same_class[0]).reshape(-1) == np.asarray(same_class[1]).reshape(-1)
            codes = codes[inside]
            if num_prev * num_new <= _DENSE_BINS_PER_PIXEL * max(flat_new.size, 1):
                joint = np.bincount(codes, minlength=num_prev * num_new)
                pair = np.flatnonzero(joint)
                inter = joint[pair]
            else:
                pair, inter = np.unique(codes, return_counts=True)
            p, n = np.divmod(pair, num_new)
            iou = inter / (prev_area[p] + new_area[n] - inter)
            keep = iou >= iou_thresh
            p, n, iou = p[keep], n[keep], iou[keep]
            if len(p):
                used = np.zeros(num_prev, bool)
                # Greedy one-to-one by decreasing IoU; a loop over candidate pairs, not pixels.
                for k in np.lexsort((n, p, -iou)):
                    if not used[p[k]] and not matched[n[k]]:
                        used[p[k]] = True
                        matched[n[k]] = True
                        lut[n[k]] = prev_ids[p[k]]

    fresh = present & ~matched
    count = int(fresh.sum())
    lut[fresh] = next_id + np.arange(count)
    return lut[new].astype(np.int32), next_id + count


class SuperpixelSource(MaskletSource):
    """Superpixels of each frame as masklets (every pixel is covered: the map is never 0).

    Args:
        method: "slic" (k-means in Lab + xy) or "felzenszwalb" (graph-based), scikit-image's.
        n_segments: SLIC: approximate number of superpixels per frame.
        compactness: SLIC: colour vs. space balance; higher = more square superpixels.
        scale: Felzenszwalb: higher = larger segments.
        sigma: Gaussian pre-smoothing width, both methods (Felzenszwalb's default 0.8; SLIC
            smooths too, scikit-image's own SLIC default is 0).
        min_size: Felzenszwalb: minimum segment size in pixels.
        temporal: link superpixels across consecutive frames (:func:`link_ids`, IoU >= 0.5,
            one-to-one); False = every superpixel of every frame gets its own id.

    Ids are unique within a video and start at 1; linking carries across chunks.
    """

    name = "superpixel"

    def __init__(
        self,
        method: SuperpixelMethod = "slic",
        n_segments: int = 200,
        compactness: float = 10.0,
        scale: float = 100.0,
        sigma: float = 0.8,
        min_size: int = 50,
        temporal: bool = True,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"SuperpixelSource: method must be one of {METHODS}, got {method!r}")
        if n_segments < 1:
            raise ValueError(f"SuperpixelSource: n_segments must be >= 1, got {n_segments}")
        if min_size < 0 or sigma < 0 or scale <= 0 or compactness <= 0:
            raise ValueError("SuperpixelSource: min_size and sigma must be >= 0, scale and compactness > 0")
        self.method = method
        self.n_segments = int(n_segments)
        self.compactness = float(compactness)
        self.scale = float(scale)
        self.sigma = float(sigma)
        self.min_size = int(min_size)
        self.temporal = bool(temporal)
        self.iou_thresh = 0.5
        self._prev: np.ndarray | None = None
        self._next_id = 1

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n_segments": self.n_segments,
            "compactness": self.compactness,
            "scale": self.scale,
            "sigma": self.sigma,
            "min_size": self.min_size,
            "temporal": self.temporal,
        }

    def _begin(self) -> None:
        self._prev = None
        self._next_id = 1

    def _end(self) -> None:
        self._prev = None

    def superpixels(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 frame → (H, W) int labels 1…K (every pixel labelled)."""
        from skimage.segmentation import felzenszwalb, slic

        if self.method == "slic":
            return slic(
                frame,
                n_segments=self.n_segments,
                compactness=self.compactness,
                sigma=self.sigma,
                start_label=1,
                channel_axis=-1,
            )
        return felzenszwalb(frame, scale=self.scale, sigma=self.sigma, min_size=self.min_size, channel_axis=-1) + 1

    def _segment(self, frames: torch.Tensor, start: int, gt: torch.Tensor | None) -> torch.Tensor:
        frames_np = frames.detach().cpu().numpy()
        out = np.empty(frames_np.shape[:3], np.int32)
        for t, frame in enumerate(frames_np):
            labels = self.superpixels(frame)
            prev = self._prev if self.temporal else None
            out[t], self._next_id = link_ids(prev, labels, self._next_id, self.iou_thresh)
            self._prev = out[t].copy()  # own copy: the caller may modify the returned map
        return torch.from_numpy(out)
