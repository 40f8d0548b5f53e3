"""VSPW / VIPSeg label space: class table, raw→evaluation remap, VIPSeg panoptic→semantic, palette.

Raw VSPW mask ids: 0 = "others", 1…124 = classes, 255 = void. Evaluation ids: raw k ∈ 1…124
→ k−1; raw 0 and 255 → 255 (ignore). This is the remap of the VSPW dataset README and of the
CFFM / MRCFA / TV3S evaluation scripts. VIPSeg panoptic PNG value v has semantic raw id
v if v < 125 else v // 100, then the same remap.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np
import torch

from vssam2 import label_kernels

IGNORE_INDEX: int = 255
NUM_CLASSES: int = 124
# VIPSeg stores "thing" pixels as category * 100 + instance; smaller values are stuff ids.
VIPSEG_THING_OFFSET: int = 125
VIPSEG_INSTANCE_DIVISOR: int = 100


@dataclass(frozen=True)
class ClassTable:
    """The class list of a dataset.

    Attributes:
        names: class name per evaluation id.
        raw_ids: raw mask id per evaluation id.
    """

    names: tuple[str, ...]
    raw_ids: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)


@lru_cache(maxsize=1)
def vspw_classes() -> ClassTable:
    """Reads the 124-class table shipped with the package (``vssam2/data/vspw_classes.tsv``)."""
    text = resources.files("vssam2").joinpath("data/vspw_classes.tsv").read_text()
    names: list[str] = []
    raw_ids: list[int] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        eval_id, raw_id, name = line.split("\t")
        if int(eval_id) != len(names):
            raise ValueError(f"vspw_classes.tsv: eval ids must be 0..N-1 in order, got {eval_id} at row {len(names)}")
        names.append(name)
        raw_ids.append(int(raw_id))
    return ClassTable(names=tuple(names), raw_ids=tuple(raw_ids))


@lru_cache(maxsize=4)
def _raw_to_eval_lut(num_classes: int) -> np.ndarray:
    # (65536,) uint8: any 8- or 16-bit raw value maps in one gather.
    lut = np.full(65536, IGNORE_INDEX, dtype=np.uint8)
    lut[1 : num_classes + 1] = np.arange(num_classes, dtype=np.uint8)
    lut.setflags(write=False)
    return lut


def out_of_range_ids(ids: np.ndarray, max_id: int, also: int = IGNORE_INDEX, limit: int = 10) -> list[int]:
    """Values of ``ids`` outside 0…max_id that are not ``also``: [] when there are none.

    One compiled counting pass for uint8 maps (the common case: no temporaries); the general
    numpy test otherwise (also when the compiled kernels are missing) and to list the
    offending values.

    Args:
        ids: integer array of any shape.
        max_id: largest valid id.
        also: one more valid id (ignore / void).
        limit: at most this many distinct bad values are returned, smallest first.
    """
    if ids.size == 0:
        return []
    if label_kernels.AVAILABLE and ids.dtype == np.uint8 and 0 <= also <= 255:
        if max_id >= 255 or label_kernels.count_out_of_range(np.ascontiguousarray(ids), max(max_id + 1, 0), also) == 0:
            return []
    bad = (ids < 0) | ((ids > max_id) & (ids != also))
    return np.unique(ids[bad])[:limit].tolist()


def raw_to_eval(raw: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Maps raw VSPW mask ids to evaluation ids.

    Args:
        raw: raw ids, any integer shape; 0 = others, 1…num_classes = classes, 255 = void.
        num_classes: number of classes.

    Returns:
        uint8 array of the same shape: k−1 for raw k in 1…num_classes, 255 otherwise.

    Raises:
        ValueError: if a value is neither 0, 255 nor in 1…num_classes (a corrupt mask).
    """
    raw = np.asarray(raw)
    values = out_of_range_ids(raw, num_classes)
    if values:
        raise ValueError(f"raw mask ids out of range (allowed 0, 1..{num_classes}, 255): {values}")
    lut = _raw_to_eval_lut(num_classes)
    if raw.dtype == np.uint8 and raw.ndim == 2 and raw.size:
        return cv2.LUT(np.ascontiguousarray(raw), lut[:256])  # one SIMD table lookup
    return lut[raw.astype(np.int64)]


def eval_to_raw(eval_ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`raw_to_eval` for valid ids (k → k+1); 255 stays 255 (raw void)."""
    eval_ids = np.asarray(eval_ids)
    return np.where(eval_ids == IGNORE_INDEX, IGNORE_INDEX, eval_ids.astype(np.int64) + 1).astype(np.uint8)


def vipseg_panoptic_to_raw(panoptic: np.ndarray) -> np.ndarray:
    """Maps VIPSeg panoptic PNG values to raw semantic ids: v if v < 125 else v // 100."""
    panoptic = np.asarray(panoptic).astype(np.int64)
    return np.where(panoptic < VIPSEG_THING_OFFSET, panoptic, panoptic // VIPSEG_INSTANCE_DIVISOR)


def vipseg_panoptic_to_eval(panoptic: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """VIPSeg panoptic values → evaluation ids (panoptic → raw semantic → eval)."""
    return raw_to_eval(vipseg_panoptic_to_raw(panoptic), num_classes)


@lru_cache(maxsize=4)
def palette(num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Colour per evaluation id, (256, 3) uint8; index 255 (ignore) is black.

    Colours are the classic PASCAL VOC bit-interleaving palette of id+1, so neighbouring ids
    get clearly different colours and the table is reproducible without a data file.
    """
    colours = np.zeros((256, 3), dtype=np.uint8)
    for index in range(num_classes):
        value, r, g, b = index + 1, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[index] = (r, g, b)
    colours.setflags(write=False)
    return colours


def colorize(eval_ids: np.ndarray | torch.Tensor, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Colours an evaluation-id map: (..., H, W) ids → (..., H, W, 3) uint8."""
    if isinstance(eval_ids, torch.Tensor):
        eval_ids = eval_ids.cpu().numpy()
    return palette(num_classes)[np.asarray(eval_ids).astype(np.int64) & 0xFF]
