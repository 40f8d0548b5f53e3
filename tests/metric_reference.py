"""Slow, obvious numpy references written from the pinned metric definitions (docs/metrics.md).

They loop over classes, images, windows and frames exactly as the formulas read, in the style
of the public VSPW / CFFM evaluation scripts, and share no code with ``vssam2.metrics``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

IGNORE = 255


def ref_iou(preds: list[np.ndarray], gts: list[np.ndarray], num_classes: int) -> tuple[float, float, np.ndarray]:
    """mIoU, WIoU and per-class IoU, one pass over classes per image."""
    tp = np.zeros(num_classes)
    fp = np.zeros(num_classes)
    fn = np.zeros(num_classes)
    for pred, gt in zip(preds, gts):
        valid = gt != IGNORE
        for c in range(num_classes):
            tp[c] += np.sum((gt == c) & (pred == c) & valid)
            fp[c] += np.sum((gt != c) & (pred == c) & valid)
            fn[c] += np.sum((gt == c) & (pred != c) & valid)
    gt_pixels = tp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + fp + fn)
    iou[gt_pixels == 0] = np.nan
    present = gt_pixels > 0
    miou = float(np.mean(iou[present])) if present.any() else float("nan")
    freq = gt_pixels / gt_pixels.sum()
    fwiou = float(np.sum(freq[present] * iou[present]))
    return miou, fwiou, iou


def ref_boundary_band(gt: np.ndarray, width: int) -> np.ndarray:
    """Erodes each valid class mask ``width`` times with a 3×3 square; the border counts as inside."""
    band = np.zeros(gt.shape, dtype=bool)
    structure = np.ones((3, 3), dtype=bool)
    for c in np.unique(gt):
        if c == IGNORE:
            continue
        mask = gt == c
        eroded = ndimage.binary_erosion(mask, structure=structure, iterations=width, border_value=1)
        band |= mask & ~eroded
    return band


def ref_boundary_iou_image(preds: list[np.ndarray], gts: list[np.ndarray], width: int) -> float:
    """Eq. 6 per image, mean over images with a non-empty band."""
    scores = []
    for pred, gt in zip(preds, gts):
        band = ref_boundary_band(gt, width)
        b = int(band.sum())
        if b == 0:
            continue
        agree = int(np.sum(band & (pred == gt)))
        scores.append(agree / (2 * b - agree))
    return float(np.mean(scores)) if scores else float("nan")


def ref_boundary_iou_class(preds: list[np.ndarray], gts: list[np.ndarray], num_classes: int, width: int) -> float:
    """Class mode: IoU over the band pixels of all images, mean over classes present in the band."""
    banded_gts = []
    for gt in gts:
        band = ref_boundary_band(gt, width)
        banded_gts.append(np.where(band, gt, IGNORE))
    miou, _, _ = ref_iou(preds, banded_gts, num_classes)
    return miou


def ref_video_consistency(
    pred_videos: list[np.ndarray], gt_videos: list[np.ndarray], n: int, windows: str = "scripts"
) -> float:
    """mVC_n the way the CFFM / VSPW ``VC_perclip`` scripts loop: per window, per frame."""
    results = []
    for pred, gt in zip(pred_videos, gt_videos):
        num_frames = len(gt)
        num_windows = num_frames - n if windows == "scripts" else num_frames - n + 1
        for i in range(max(num_windows, 0)):
            global_common = np.ones(gt.shape[1:], dtype=bool)
            pred_global_common = np.ones(gt.shape[1:], dtype=bool)
            for j in range(1, n):
                global_common = np.logical_and(global_common, gt[i] == gt[i + j])
                pred_global_common = np.logical_and(pred_global_common, pred[i] == pred[i + j])
            both = pred_global_common * global_common
            with np.errstate(invalid="ignore", divide="ignore"):
                results.append(both.sum() / global_common.sum())
    return float(np.nanmean(results)) if results and not np.all(np.isnan(results)) else float("nan")
