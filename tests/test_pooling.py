"""Masked-average pooling (Eq. 3), masklet targets, histogram confusion and the MLP head,
each against a slow reference written from the definition."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import one_thread

from vssam2 import pooling
from vssam2.features.extract import extract_clip_masklets, paint_rows
from vssam2.heads import MLPHead
from vssam2.metrics.functional import confusion_from_histograms, confusion_matrix
from vssam2.pooling import linear_source_weights, masked_average_pool, nearest_source_index, split_by_frame
from vssam2.refine import class_histogram, masklet_targets


def reference_pool(features: torch.Tensor, segments: torch.Tensor, mode: str) -> dict[int, tuple[np.ndarray, int]]:
    """Eq. 3 literally: upsample F to the frame grid, then average it over each masklet's pixels.

    F is upsampled in float32, the dtype whose source cells pooling reproduces (on float64
    input PyTorch's CPU kernels compute positions in float64, which can pick other cells).
    """
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    up = F.interpolate(features.float(), size=segments.shape[1:], mode=mode, **kwargs).double()  # (T, C, H, W)
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


# Every (input, output) length pair up to these bounds is checked along one axis: feature
# grids up to 80 cells (stride 16 at 1280), frames up to 900 pixels (480p is 480 x 854). The
# cost is one F.interpolate call per pair; the default run checks bilinear up to 300 pixels.
MAX_IN, MAX_OUT, MAX_OUT_DEFAULT_BILINEAR = 80, 900, 300


def _all_positions(max_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output position i and output length of every position of the lengths 1…max_out, concatenated."""
    lengths = torch.arange(1, max_out + 1)
    out_size = torch.repeat_interleave(lengths, lengths)  # (Σ lengths,)
    starts = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    return torch.arange(out_size.numel()) - starts, out_size


def _interpolate_every_length(probes: torch.Tensor, mode: str, max_out: int) -> torch.Tensor:
    """(C, in) probe rows interpolated along H to every length 1…max_out: (C, Σ lengths)."""
    grid = probes.view(1, probes.shape[0], probes.shape[1], 1)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    rows = [F.interpolate(grid, size=(out, 1), mode=mode, **kwargs) for out in range(1, max_out + 1)]
    return torch.cat(rows, dim=2).view(probes.shape[0], -1)


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Tens of thousands of tiny calls: a thread pool only adds overhead (conftest.one_thread)."""
    with one_thread():
        yield


def test_nearest_source_index_equals_interpolate_for_every_size_pair(single_thread: None) -> None:
    pos, out_size = _all_positions(MAX_OUT)
    mismatched = []
    for in_size in range(1, MAX_IN + 1):
        index_map = torch.arange(in_size, dtype=torch.float32)[None]  # cell index as value
        expected = _interpolate_every_length(index_map, "nearest", MAX_OUT)[0].long()
        wrong = nearest_source_index(pos, in_size, out_size) != expected
        mismatched += [(in_size, int(out)) for out in out_size[wrong].unique()]
    assert not mismatched, f"{len(mismatched)} (in, out) pairs differ from F.interpolate, e.g. {mismatched[:5]}"


@pytest.mark.parametrize("max_out", [MAX_OUT_DEFAULT_BILINEAR, pytest.param(MAX_OUT, marks=pytest.mark.slow)])
def test_linear_source_weights_equal_interpolate_for_every_size_pair(max_out: int, single_thread: None) -> None:
    # Probes: 1 on even cells / on odd cells give the weights of the two source cells exactly
    # (products with 0 and 1 are exact); the cell index as value checks which cells they are.
    exact = torch.backends.cpu.get_cpu_capability() != "DEFAULT"  # the scalar build rounds s twice
    pos, out_size = _all_positions(max_out)
    mismatched = []
    for in_size in range(1, MAX_IN + 1):
        cell = torch.arange(in_size)
        expected = _interpolate_every_length(
            torch.stack([cell % 2 == 0, cell % 2 == 1, cell]).float(), "bilinear", max_out
        )
        low, high, w_low, w_high = linear_source_weights(pos, in_size, out_size)
        assert bool(((low >= 0) & (high < in_size) & (high - low >= 0) & (high - low <= 1)).all())
        even = w_low * (low % 2 == 0) + w_high * (high % 2 == 0)
        odd = w_low * (low % 2 == 1) + w_high * (high % 2 == 1)
        weight_error = torch.maximum((even - expected[0]).abs(), (odd - expected[1]).abs())
        index_error = (w_low * low + w_high * high - expected[2]).abs()
        wrong = (weight_error > (0.0 if exact else 1e-6)) | (index_error > 1e-3)
        mismatched += [(in_size, int(out)) for out in out_size[wrong].unique()]
    assert not mismatched, f"{len(mismatched)} (in, out) pairs differ from F.interpolate, e.g. {mismatched[:5]}"


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_pool_reads_interpolate_cells_where_position_times_scale_is_whole(mode: str) -> None:
    # 2 cells -> 82 rows: i·in/out = 1 at row 41, where float32 gives cell 0 and float64 cell 1;
    # 60 cells -> 854 columns: the same at column 427. One masklet is that row, one that column.
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(1, 4, 2, 60, generator=generator)
    segments = torch.zeros(1, 82, 854, dtype=torch.int64)
    segments[0, 41, :] = 1
    segments[0, :, 427] = 2
    segments[0, :5, :5] = 3
    pooled = masked_average_pool(features, segments, mode)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    up = F.interpolate(features, size=(82, 854), mode=mode, **kwargs)[0].double()  # (C, H, W)
    assert pooled.ids.tolist() == [1, 2, 3]
    for row, mid in enumerate(pooled.ids.tolist()):
        mask = segments[0] == mid
        np.testing.assert_allclose(pooled.vectors[row].numpy(), up[:, mask].mean(dim=1).numpy(), rtol=1e-5, atol=1e-6)


def _compacted(segments: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The same map with ids renumbered 1…K in increasing order (0 kept), and the original ids."""
    ids = sorted(set(segments.unique().tolist()) - {0})
    out = torch.zeros_like(segments)
    for new, mid in enumerate(ids, start=1):
        out[segments == mid] = new
    return out, ids


def test_huge_sparse_ids_pool_like_compact_ids_without_id_sized_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(2, 3, 3, 4, generator=generator)
    segments = torch.randint(0, 3, (2, 10, 10), generator=generator)
    segments[segments == 1] = 2**26
    segments[segments == 2] = 2**31 - 1
    segments[0, 0, 0] = 2**62  # int64 ids, not only int32
    segments[1, 9, 9] = 7
    compact, ids = _compacted(segments)

    longest = [0]
    bincount = torch.bincount

    def recording_bincount(
        input: torch.Tensor, weights: torch.Tensor | None = None, minlength: int = 0
    ) -> torch.Tensor:
        longest[0] = max(longest[0], minlength, int(input.max()) + 1 if input.numel() else 0)
        return bincount(input, weights=weights, minlength=minlength)

    monkeypatch.setattr(torch, "bincount", recording_bincount)
    pooled = masked_average_pool(features, segments, "bilinear")
    codes, frame, split_ids = split_by_frame(segments)
    # No histogram is sized by the ids: the largest is (masklets + 1) x feature cells.
    assert 0 < longest[0] <= (len(ids) + 1) * 3 * 4
    monkeypatch.undo()

    reference = masked_average_pool(features, compact, "bilinear")
    assert pooled.ids.tolist() == ids and torch.equal(pooled.area, reference.area)
    assert torch.equal(pooled.vectors, reference.vectors)
    compact_codes, compact_frame, compact_ids = split_by_frame(compact)
    assert torch.equal(codes, compact_codes) and torch.equal(frame, compact_frame)
    assert split_ids.tolist() == [ids[i - 1] for i in compact_ids.tolist()]


def test_distinct_dense_and_sparse_paths_agree_with_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = torch.randint(0, 50, (3, 7, 9), generator=torch.Generator().manual_seed(6))

    def check(keys: torch.Tensor) -> None:
        values, index, counts = pooling._distinct(keys)
        expected = sorted(set(keys.flatten().tolist()))
        assert values.tolist() == expected
        assert torch.equal(values[index], keys)
        assert counts.tolist() == [int((keys == v).sum()) for v in expected]

    check(keys)  # dense: bincount + look-up table
    monkeypatch.setattr(pooling, "_DENSE_SPAN", 0)
    keys[1, 2, 3] = 10_000  # longer than the map: torch.unique
    check(keys)
    check(keys[:0])  # empty


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
