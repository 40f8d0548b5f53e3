"""Masked-average pooling (Eq. 3), masklet targets, histogram confusion and the MLP head,
each against a slow reference written from the definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vssam2.features.extract import extract_clip_masklets, paint_rows
from vssam2.heads import MLPHead
from vssam2.metrics.functional import confusion_from_histograms, confusion_matrix
from vssam2.pooling import masked_average_pool, split_by_frame
from vssam2.refine import class_histogram, masklet_targets


def reference_pool(features: torch.Tensor, segments: torch.Tensor, mode: str) -> dict[int, tuple[np.ndarray, int]]:
    """Eq. 3 literally: upsample F to the frame grid, then average it over each masklet's pixels."""
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    up = F.interpolate(features.double(), size=segments.shape[1:], mode=mode, **kwargs)  # (T, C, H, W)
    out = {}
    for mid in sorted(set(segments.unique().tolist()) - {0}):
        total = np.zeros(features.shape[1])
        count = 0
        for t in range(segments.shape[0]):
            for y in range(segments.shape[1]):
                for x in range(segments.shape[2]):
                    if segments[t, y, x] == mid:
                        total += up[t, :, y, x].numpy()
                        count += 1
        out[mid] = (total / count, count)
    return out


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize(
    "shape",
    [(2, 3, 3, 4, 11, 13), (1, 2, 4, 4, 16, 16), (3, 4, 5, 7, 9, 20), (1, 2, 6, 5, 6, 5)],  # incl. H < h·2, equal grids
)
def test_pool_matches_reference(mode: str, shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    num_frames, channels, h, w, height, width = shape
    features = torch.randn(num_frames, channels, h, w, generator=generator)
    segments = torch.randint(0, 5, (num_frames, height, width), generator=generator)
    segments[0, 0, 0] = 17  # a one-pixel masklet with a sparse id
    pooled = masked_average_pool(features, segments, mode)
    reference = reference_pool(features, segments, mode)
    assert pooled.ids.tolist() == sorted(reference)
    for i, mid in enumerate(pooled.ids.tolist()):
        vector, count = reference[mid]
        assert int(pooled.area[i]) == count
        np.testing.assert_allclose(pooled.vectors[i].numpy(), vector, rtol=1e-5, atol=1e-5)


def test_masklet_smaller_than_a_feature_cell_gets_its_own_vector() -> None:
    # Feature cells are 16×16 pixels; a 2×2 masklet inside one cell of a constant-per-cell map.
    features = torch.arange(4, dtype=torch.float32).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    segments = torch.ones(1, 32, 32, dtype=torch.int32)
    segments[0, 20:22, 20:22] = 2
    pooled = masked_average_pool(features, segments, "nearest")
    assert pooled.ids.tolist() == [1, 2]
    assert int(pooled.area[1]) == 4
    assert torch.allclose(pooled.vectors[1], torch.full((3,), 3.0))  # the bottom-right cell's value
    # Bilinear: still a vector, between the cell values.
    pooled = masked_average_pool(features, segments, "bilinear")
    assert 0.0 < float(pooled.vectors[1, 0]) <= 3.0


def test_pool_empty_and_errors() -> None:
    features = torch.randn(2, 3, 4, 4)
    pooled = masked_average_pool(features, torch.zeros(2, 8, 8, dtype=torch.int64))
    assert pooled.ids.numel() == 0 and pooled.vectors.shape == (0, 3)
    with pytest.raises(ValueError, match="same T"):
        masked_average_pool(features, torch.zeros(3, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="pooling mode"):
        masked_average_pool(features, torch.zeros(2, 8, 8, dtype=torch.int64), "area")
    with pytest.raises(ValueError, match=">= 0"):
        masked_average_pool(features, torch.full((2, 8, 8), -1))


def test_split_by_frame_gives_one_row_per_frame_and_id() -> None:
    segments = torch.tensor([[[0, 3], [3, 5]], [[5, 5], [0, 0]]])
    codes, frame, ids = split_by_frame(segments)
    assert frame.tolist() == [0, 0, 1] and ids.tolist() == [3, 5, 5]
    assert codes.tolist() == [[[0, 1], [1, 2]], [[3, 3], [0, 0]]]


def reference_targets(segments: np.ndarray, gt: np.ndarray, num_classes: int) -> dict[int, int]:
    """Majority GT class per masklet over valid pixels, lowest id on ties, 255 if none."""
    out = {}
    for mid in sorted(set(np.unique(segments).tolist()) - {0}):
        labels = gt[segments == mid]
        counts = {c: int((labels == c).sum()) for c in range(num_classes)}
        best = max(counts.values())
        out[mid] = 255 if best == 0 else min(c for c, n in counts.items() if n == best)
    return out


def test_masklet_targets_hand_cases() -> None:
    segments = np.array([[1, 1, 1, 2], [2, 3, 3, 4], [4, 4, 0, 0]])
    gt = np.array([[5, 5, 7, 255], [255, 1, 2, 9], [9, 255, 3, 3]], dtype=np.uint8)
    ids, hist = class_histogram(torch.from_numpy(segments), torch.from_numpy(gt), num_classes=10)
    targets = masklet_targets(hist, num_classes=10)
    # 1: 5 wins 2:1; 2: ignore only → 255; 3: tie 1/2 → 1; 4: 9 twice, ignore does not vote.
    assert dict(zip(ids.tolist(), targets.tolist())) == {1: 5, 2: 255, 3: 1, 4: 9}
    assert hist[1, 255] == 2  # ignore pixels are counted in their own column


def test_masklet_targets_random_against_reference() -> None:
    rng = np.random.default_rng(0)
    segments = rng.integers(0, 7, (3, 10, 12))
    gt = rng.choice([0, 1, 2, 3, 255], size=(3, 10, 12)).astype(np.uint8)
    ids, hist = class_histogram(torch.from_numpy(segments), torch.from_numpy(gt), num_classes=4)
    got = dict(zip(ids.tolist(), masklet_targets(hist, num_classes=4).tolist()))
    assert got == reference_targets(segments, gt, 4)


def test_confusion_from_histograms_equals_painted_map_confusion() -> None:
    rng = np.random.default_rng(1)
    num_classes = 6
    segments = torch.from_numpy(rng.integers(0, 9, (2, 15, 17)))
    gt = torch.from_numpy(rng.choice([0, 1, 2, 3, 4, 5, 255], size=(2, 15, 17)).astype(np.uint8))
    features = torch.randn(2, 4, 3, 3)
    masklets = extract_clip_masklets(features, segments, gt, num_classes=num_classes)
    classes = torch.from_numpy(rng.integers(0, num_classes, masklets.ids.shape[0]))
    classes[0] = 255  # a masklet left unpredicted
    painted = paint_rows(masklets.rows, classes)
    uncovered = torch.bincount(gt[segments == 0].long(), minlength=256)
    expected = confusion_matrix(painted, gt, num_classes)
    got = confusion_from_histograms(classes, masklets.hist, uncovered, num_classes)
    assert torch.equal(got, expected)


def test_paint_rows_fill_from_base() -> None:
    rows = torch.tensor([[[0, -1], [1, -1]]])
    base = torch.tensor([[[9, 8], [7, 6]]], dtype=torch.uint8)
    classes = torch.tensor([3, 4])
    assert paint_rows(rows, classes).tolist() == [[[3, 255], [4, 255]]]
    assert paint_rows(rows, classes, base).tolist() == [[[3, 8], [4, 6]]]


def test_extract_clip_masklets_per_frame_rows() -> None:
    segments = torch.tensor([[[1, 1], [2, 2]], [[1, 1], [1, 1]]])
    gt = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [2, 2]]], dtype=torch.uint8)
    features = torch.randn(2, 3, 1, 1)
    clip = extract_clip_masklets(features, segments, gt, num_classes=3)
    assert clip.ids.tolist() == [1, 2] and clip.frame.tolist() == [-1, -1] and clip.area.tolist() == [6, 2]
    assert masklet_targets(clip.hist, 3).tolist() == [2, 1]
    frames = extract_clip_masklets(features, segments, gt, per_frame=True, num_classes=3)
    assert frames.ids.tolist() == [1, 2, 1] and frames.frame.tolist() == [0, 0, 1]
    assert masklet_targets(frames.hist, 3).tolist() == [0, 1, 2]
    assert torch.allclose(frames.vectors[2], features[1, :, 0, 0])


def test_mlp_head_shapes_and_errors() -> None:
    head = MLPHead(8, num_classes=5, hidden_dims=(16, 16), dropout=0.0)
    assert head(torch.randn(3, 8)).shape == (3, 5)
    assert MLPHead(8, 5, hidden_dims=()).layers[-1].in_features == 8
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        head(torch.randn(3, 7))
