"""Oracle masklets from ground truth: the upper bound of majority-vote refinement.

Each masklet is one connected component of one GT class in one frame (linked across frames
by IoU within the same class), so a masklet never mixes classes: majority voting inside it
can at best recover the GT class of every masklet, and what remains wrong after refinement
with these masklets is the base model's error that no class-pure region voting can fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vssam2.labels import IGNORE_INDEX
from vssam2.masklets.base import MaskletSource
from vssam2.masklets.superpixel import link_ids

__all__ = ["OracleSource", "class_components"]


def class_components(gt: np.ndarray, connectivity: int = 8, min_area: int = 0) -> np.ndarray:
    """Connected components of every class of one GT frame, in one vectorised labelling.

    Args:
        gt: (H, W) evaluation ids, ``IGNORE_INDEX`` (255) = ignore.
        connectivity: 4 or 8 (neighbourhood of a component).
        min_area: components with fewer pixels become 0.

    Returns:
        (H, W) int labels: 0 at ignore pixels and removed components, else 1…K (labels of
        removed components are skipped, not reused).
    """
    from skimage.measure import label

    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    # skimage labels connected regions of equal value: one pass over all classes at once.
    labels = label(gt, background=IGNORE_INDEX, connectivity=1 if connectivity == 4 else 2)
    if min_area > 0:
        area = np.bincount(labels.reshape(-1))
        small = area < min_area
        small[0] = False
        labels = np.where(small[labels], 0, labels)
    return labels


class OracleSource(MaskletSource):
    """Masklets = connected components of each ground-truth class (needs ``gt`` in every chunk).

    Args:
        connectivity: 4 or 8, the neighbourhood of a component.
        temporal: link components across consecutive frames (IoU >= 0.5 and same class,
            one-to-one, :func:`~vssam2.masklets.superpixel.link_ids`); False = new ids in
            every frame.
        min_area: components with fewer pixels (in their frame) get 0 (no masklet).

    Ignore pixels (255) get 0. Ids are unique within a video and start at 1.
    """

    name = "oracle"

    def __init__(self, connectivity: int = 8, temporal: bool = True, min_area: int = 0) -> None:
        super().__init__()
        if connectivity not in (4, 8):
            raise ValueError(f"OracleSource: connectivity must be 4 or 8, got {connectivity}")
        if min_area < 0:
            raise ValueError(f"OracleSource: min_area must be >= 0, got {min_area}")
        self.connectivity = int(connectivity)
        self.temporal = bool(temporal)
        self.min_area = int(min_area)
        self.iou_thresh = 0.5
        self._prev: np.ndarray | None = None
        self._prev_gt: np.ndarray | None = None
        self._next_id = 1

    def config(self) -> dict[str, Any]:
        return {"connectivity": self.connectivity, "temporal": self.temporal, "min_area": self.min_area}

    def _begin(self) -> None:
        self._prev = None
        self._prev_gt = None
        self._next_id = 1

    def _end(self) -> None:
        self._prev = None
        self._prev_gt = None

    def _segment(self, frames: torch.Tensor, start: int, gt: torch.Tensor | None) -> torch.Tensor:
        if gt is None:
            raise ValueError(
                f"{type(self).__name__} ({self.name!r} source) needs the ground truth: pass gt= to add_chunk"
            )
        if tuple(gt.shape) != tuple(frames.shape[:3]):
            raise ValueError(
                f"{type(self).__name__}: gt of shape {tuple(gt.shape)} does not match frames {tuple(frames.shape[:3])}"
            )
        gt_np = gt.detach().cpu().numpy()
        out = np.empty(gt_np.shape, np.int32)
        for t, frame_gt in enumerate(gt_np):
            labels = class_components(frame_gt, self.connectivity, self.min_area)
            if self.temporal and self._prev is not None:
                out[t], self._next_id = link_ids(
                    self._prev, labels, self._next_id, self.iou_thresh, same_class=(self._prev_gt, frame_gt)
                )
            else:
                out[t], self._next_id = link_ids(None, labels, self._next_id)
            self._prev = out[t].copy()
            self._prev_gt = frame_gt.copy()
        return torch.from_numpy(out)
