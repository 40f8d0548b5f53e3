"""Script-style numpy scoring of a VSPW-layout split: the baseline of ``bench_metrics.py``.

Written the way the public VSPW / CFFM / MRCFA / TV3S evaluation scripts score a
``result_submission`` folder, with the definitions pinned in docs/metrics.md:

- **mIoU / WIoU** (the scripts' ``Evaluator``): a Python loop over frames, each reading the GT
  PNG (remapped raw→eval like the scripts' ``map_category_id``) and the prediction PNG and
  accumulating ``np.bincount(n * gt[valid] + pred[valid])``. One change to the scripts: a
  prediction of 255 ("no prediction") goes to an extra last column, so it is a false negative
  of the GT class and a false positive of no class (the scripts would index past the row).
- **mBIoU** (Eq. 5–6, image mode): per image, per GT class, ``cv2.erode`` (or
  ``scipy.ndimage.binary_erosion``) of the class mask with a 3×3 kernel iterated ``width``
  times, the image border counting as inside (not a boundary); band = mask & ~eroded;
  score = agree / (2|B| − agree), mean over images with |B| > 0.
- **mVC_n** (VSPW's ``VC_perclip.py``, as CFFM / MRCFA / TV3S ship it): for each clip length,
  for each video with more than n frames, read every GT / prediction PNG of the video into
  lists, then ``get_common``: windows ``i in range(T - n)``, ``j in 1..n-1``,
  ``global_common`` / ``predglobal_common`` ``np.logical_and``, acc = both.sum() /
  global_common.sum(); ``np.nanmean`` over all windows of all videos pooled.

The scripts read the data once per script run and once more per clip length in
``VC_perclip.py`` (frames are read into lists per video, then the window loop compares the
in-memory lists); :func:`score_from_disk` reproduces exactly those reads: one pass for
mIoU/WIoU/mBIoU together (being generous: the mBIoU is not in the public scripts and would be
one more pass), then one pass per clip length. :func:`score_in_memory` runs the same numpy
code on arrays already in memory (compute only).

This module deliberately shares no code with ``vssam2.metrics`` or ``datamodules``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

try:  # cv2 is what a script would use (and it is ~3x faster than scipy here)
    import cv2
except ImportError:  # pragma: no cover - opencv is optional
    cv2 = None
from scipy import ndimage

IGNORE = 255
NUM_CLASSES = 124
BOUNDARY_WIDTH = 5
CLIP_NUMS = (8, 16)


# ----------------------------------------------------------------------------- reading


def map_category_id(gt_image: np.ndarray) -> np.ndarray:
    """Raw VSPW ids → evaluation ids, as the scripts do: 0 and 255 → 255, k → k − 1."""
    gt_image[gt_image == 0] = 255
    gt_image = gt_image - 1
    gt_image[gt_image == 254] = 255
    return gt_image


@dataclass
class ReadTimer:
    """Counts the PNG reads of a scoring run and the seconds they took."""

    seconds: float = 0.0
    files: int = 0

    def read_gt(self, path: str) -> np.ndarray:
        start = time.perf_counter()
        gt = map_category_id(np.array(Image.open(path)))
        self.seconds += time.perf_counter() - start
        self.files += 1
        return gt

    def read_pred(self, path: str) -> np.ndarray:
        start = time.perf_counter()
        pred = np.array(Image.open(path))
        self.seconds += time.perf_counter() - start
        self.files += 1
        return pred


# ----------------------------------------------------------------------------- mIoU / WIoU


class Evaluator:
    """The scripts' confusion-matrix evaluator, with a "no prediction" column (index C)."""

    def __init__(self, num_class: int = NUM_CLASSES) -> None:
        self.num_class = num_class
        self.confusion_matrix = np.zeros((num_class, num_class + 1))

    def _generate_matrix(self, gt_image: np.ndarray, pre_image: np.ndarray) -> np.ndarray:
        mask = (gt_image >= 0) & (gt_image < self.num_class)
        pred = pre_image[mask].astype("int")
        pred[pred == IGNORE] = self.num_class  # no prediction: FN of the GT class, FP of none
        label = (self.num_class + 1) * gt_image[mask].astype("int") + pred
        count = np.bincount(label, minlength=self.num_class * (self.num_class + 1))
        return count.reshape(self.num_class, self.num_class + 1)

    def add_batch(self, gt_image: np.ndarray, pre_image: np.ndarray) -> None:
        assert gt_image.shape == pre_image.shape
        self.confusion_matrix += self._generate_matrix(gt_image, pre_image)

    def _iou(self) -> tuple[np.ndarray, np.ndarray]:
        tp = np.diag(self.confusion_matrix[:, : self.num_class])
        gt_pixels = np.sum(self.confusion_matrix, axis=1)
        predicted = np.sum(self.confusion_matrix[:, : self.num_class], axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            iu = tp / (gt_pixels + predicted - tp)
        return iu, gt_pixels

    def Mean_Intersection_over_Union(self) -> float:  # noqa: N802 - the scripts' name
        iu, gt_pixels = self._iou()
        return float(np.mean(iu[gt_pixels > 0]))  # classes with GT pixels only

    def Frequency_Weighted_Intersection_over_Union(self) -> float:  # noqa: N802
        iu, gt_pixels = self._iou()
        freq = gt_pixels / np.sum(gt_pixels)
        return float((freq[freq > 0] * iu[freq > 0]).sum())


# ----------------------------------------------------------------------------- mBIoU


def boundary_band(gt: np.ndarray, width: int = BOUNDARY_WIDTH) -> np.ndarray:
    """GT boundary band: per class, mask & ~erode(mask, 3×3, ``width`` times); border = inside."""
    band = np.zeros(gt.shape, dtype=bool)
    for c in np.unique(gt):
        if c == IGNORE:
            continue  # ignore pixels are never in the band, but they erode their neighbours
        mask = gt == c
        if cv2 is not None:
            # cv2's default border value for erosion is +inf: the image border is not a boundary.
            eroded = cv2.erode(mask.view(np.uint8), np.ones((3, 3), np.uint8), iterations=width).view(bool)
        else:
            eroded = ndimage.binary_erosion(mask, np.ones((3, 3), bool), iterations=width, border_value=1)
        band |= mask & ~eroded
    return band


def boundary_iou_image(pred: np.ndarray, gt: np.ndarray, width: int = BOUNDARY_WIDTH) -> float | None:
    """Eq. 6 for one image; None when the band is empty (the image is not averaged)."""
    band = boundary_band(gt, width)
    b = int(band.sum())
    if b == 0:
        return None
    agree = int(np.sum(band & (pred == gt)))
    return agree / (2 * b - agree)


# ----------------------------------------------------------------------------- mVC_n


def get_common(list_: Sequence[np.ndarray], predlist: Sequence[np.ndarray], clip_num: int, h: int, w: int) -> list:
    """VSPW's ``VC_perclip.get_common``, unchanged: T − n windows per video."""
    accs = []
    for i in range(len(list_) - clip_num):
        global_common = np.ones((h, w))
        predglobal_common = np.ones((h, w))
        for j in range(1, clip_num):
            common = list_[i] == list_[i + j]
            global_common = np.logical_and(global_common, common)
            pred_common = predlist[i] == predlist[i + j]
            predglobal_common = np.logical_and(predglobal_common, pred_common)
        pred = predglobal_common * global_common
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = pred.sum() / global_common.sum()  # NaN without GT-stable pixels
        accs.append(acc)
    return accs


# ----------------------------------------------------------------------------- drivers


@dataclass
class Scores:
    """The five numbers plus how a run spent its time."""

    values: dict[str, float]
    frames: int
    read_seconds: float = 0.0
    files_read: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def _finish(evaluator: Evaluator, biou: list[float], vc: dict[int, list]) -> dict[str, float]:
    values = {
        "mIoU": evaluator.Mean_Intersection_over_Union(),
        "WIoU": evaluator.Frequency_Weighted_Intersection_over_Union(),
        "mBIoU": float(np.mean(biou)) if biou else float("nan"),
    }
    for clip_num, accs in vc.items():
        values[f"mVC{clip_num}"] = float(np.nanmean(np.asarray(accs))) if accs else float("nan")
    return values


def read_split(root: str, split: str = "val") -> list[str]:
    with open(os.path.join(root, f"{split}.txt")) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith(".")]


def score_from_disk(
    root: str,
    pred_dir: str,
    split: str = "val",
    num_classes: int = NUM_CLASSES,
    width: int = BOUNDARY_WIDTH,
    clip_nums: Sequence[int] = CLIP_NUMS,
) -> Scores:
    """Scores ``<pred_dir>/<video>/<frame>.png`` against ``<root>/data/<video>/mask`` like the scripts.

    Pass 1 (evaluation script): per frame, read GT + prediction, add to the confusion matrix
    and score the boundary. Pass 2 (``VC_perclip.py``): per clip length, per video, read all
    frames into lists and run ``get_common``.
    """
    reader = ReadTimer()
    videolist = read_split(root, split)
    evaluator = Evaluator(num_classes)
    biou: list[float] = []
    frames = 0
    for video in videolist:
        images = sorted(os.listdir(os.path.join(root, "data", video, "mask")))
        for imgname in images:
            if imgname[0] == ".":
                continue
            gt = reader.read_gt(os.path.join(root, "data", video, "mask", imgname))
            pred = reader.read_pred(os.path.join(pred_dir, video, imgname))
            evaluator.add_batch(gt, pred)
            score = boundary_iou_image(pred, gt, width)
            if score is not None:
                biou.append(score)
            frames += 1

    vc: dict[int, list] = {}
    for clip_num in clip_nums:
        total_acc: list = []
        for video in videolist:
            images = sorted(os.listdir(os.path.join(root, "data", video, "mask")))
            if len(images) <= clip_num:
                continue
            imglist, predlist = [], []
            for imgname in images:
                if imgname[0] == ".":
                    continue
                img = reader.read_gt(os.path.join(root, "data", video, "mask", imgname))
                h, w = img.shape
                imglist.append(img)
                predlist.append(reader.read_pred(os.path.join(pred_dir, video, imgname)))
            total_acc.extend(get_common(imglist, predlist, clip_num, h, w))
        vc[clip_num] = total_acc
    return Scores(_finish(evaluator, biou, vc), frames, reader.seconds, reader.files)


def score_in_memory(
    gts: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    num_classes: int = NUM_CLASSES,
    width: int = BOUNDARY_WIDTH,
    clip_nums: Sequence[int] = CLIP_NUMS,
) -> Scores:
    """The same per-frame numpy code on videos already in memory: ``gts[v]``, ``preds[v]`` (T, H, W) uint8."""
    evaluator = Evaluator(num_classes)
    biou: list[float] = []
    frames = 0
    for gt_video, pred_video in zip(gts, preds):
        for gt, pred in zip(gt_video, pred_video):
            evaluator.add_batch(gt, pred)
            score = boundary_iou_image(pred, gt, width)
            if score is not None:
                biou.append(score)
            frames += 1
    vc: dict[int, list] = {}
    for clip_num in clip_nums:
        total_acc: list = []
        for gt_video, pred_video in zip(gts, preds):
            if len(gt_video) <= clip_num:
                continue
            h, w = gt_video.shape[1:]
            total_acc.extend(get_common(list(gt_video), list(pred_video), clip_num, h, w))
        vc[clip_num] = total_acc
    return Scores(_finish(evaluator, biou, vc), frames)
