"""vssam2.label_kernels against plain numpy written from each kernel's definition.

Sizes straddle every block length inside the kernels (32-pixel blocks,
255-pixel byte counters, 2048-pixel run blocks, 64-pixel words), and the maps mix long runs
with noise so that both the block path and the pixel path run. Without the compiled kernels
(not built, or ``VSSAM2_NO_KERNELS=1``) these tests are skipped; ``tests/test_kernels_off.py``
checks what runs instead.
"""

from __future__ import annotations

import numpy as np
import pytest
from metric_reference import ref_boundary_band

from vssam2 import label_kernels

pytestmark = pytest.mark.skipif(
    not label_kernels.AVAILABLE,
    reason="the compiled label-map kernels are not built (or switched off by VSSAM2_NO_KERNELS=1)",
)

SIZES = [0, 1, 3, 31, 32, 33, 255, 256, 1000, 4095, 4097, 70_001]


def runs_and_noise(rng: np.random.Generator, size: int, values: int, noise: float, dtype=np.uint8) -> np.ndarray:
    """(size,) ids in runs of random length, a fraction ``noise`` replaced by random ids."""
    lengths = rng.integers(1, 90, size=size // 2 + 1)
    ids = np.repeat(rng.integers(0, values, size=lengths.size), lengths)[:size]
    flip = rng.random(size) < noise
    ids[flip] = rng.integers(0, values, size=int(flip.sum()))
    return ids.astype(dtype)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("noise", [0.0, 0.05, 1.0])
def test_joint_histogram_equals_bincount_and_adds(size, noise):
    rng = np.random.default_rng(size)
    rows, cols = runs_and_noise(rng, size, 256, noise), runs_and_noise(rng, size, 256, noise)
    hist = np.full(1 << 16, 7, dtype=np.int64)  # counts are added to what is there
    label_kernels.joint_histogram(rows, cols, hist)
    expected = np.bincount((rows.astype(np.int64) << 8) | cols, minlength=1 << 16) + 7
    np.testing.assert_array_equal(hist, expected)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("rows", [3, 1100])
def test_vote_histogram_equals_bincount(size, rows):
    rng = np.random.default_rng(size + rows)
    seg = runs_and_noise(rng, size, rows, 0.03, np.int32)
    base = runs_and_noise(rng, size, 256, 0.03)
    hist = np.zeros(rows * 256, dtype=np.int64)
    assert label_kernels.vote_histogram(seg, base, hist) == 0
    np.testing.assert_array_equal(hist, np.bincount((seg.astype(np.int64) << 8) | base, minlength=rows * 256))


def test_vote_histogram_leaves_out_and_counts_ids_outside_the_rows():
    rng = np.random.default_rng(0)
    seg = runs_and_noise(rng, 5000, 4, 0.1, np.int32)
    seg[100:164] = 9  # a whole block of one bad id
    seg[1000] = -3  # a negative id reads as a huge unsigned one
    seg[4999] = 4  # in the tail
    base = runs_and_noise(rng, 5000, 256, 0.1)
    hist = np.zeros(4 * 256, dtype=np.int64)
    bad = (seg < 0) | (seg >= 4)
    assert label_kernels.vote_histogram(seg, base, hist) == int(bad.sum())
    good = ~bad
    expected = np.bincount((seg[good].astype(np.int64) << 8) | base[good], minlength=4 * 256)
    np.testing.assert_array_equal(hist, expected)


@pytest.mark.parametrize("size", SIZES)
def test_paint_votes_equals_where(size):
    rng = np.random.default_rng(size)
    seg = runs_and_noise(rng, size, 6, 0.02, np.int32)
    base = runs_and_noise(rng, size, 256, 0.2)
    paint = np.array([-1, 3, -1, 255, 0, 17], dtype=np.int16)
    out = np.full(size, 99, dtype=np.uint8)
    label_kernels.paint_votes(seg, base, paint, out)
    painted = paint[seg]
    np.testing.assert_array_equal(out, np.where(painted >= 0, painted, base).astype(np.uint8))


@pytest.mark.parametrize("bad_at", [0, 40, 69])
def test_paint_votes_rejects_ids_outside_the_table(bad_at):
    seg = np.zeros(70, dtype=np.int32)
    seg[bad_at] = 2
    with pytest.raises(ValueError, match=r"outside 0\.\.\.1"):
        label_kernels.paint_votes(seg, np.zeros(70, np.uint8), np.array([-1, 4], np.int16), np.empty(70, np.uint8))
    with pytest.raises(ValueError, match="not a byte"):
        label_kernels.paint_votes(
            seg * 0, np.zeros(70, np.uint8), np.array([-1, 256], np.int16), np.empty(70, np.uint8)
        )


def advance_reference(targets, preds, last_target, last_preds, gt_run, both_run, cap, thresholds):
    """Frames of the run-length state, pixel by pixel and frame by frame from its definition."""
    gt_run, both_run = gt_run.astype(int), both_run.astype(int)
    counts = np.zeros((len(targets), len(thresholds), 2), dtype=np.int64)
    for f in range(len(targets)):
        before_target = targets[f - 1] if f else last_target
        before_preds = preds[f - 1] if f else last_preds
        for i in range(targets.shape[1]):
            same = targets[f, i] == before_target[i]
            both = same and preds[f, i] == before_preds[i]
            gt_run[i] = min(gt_run[i] + 1, cap) if same else 0
            both_run[i] = min(both_run[i] + 1, cap) if both else 0
        for j, threshold in enumerate(thresholds):
            counts[f, j] = (np.sum(both_run >= threshold), np.sum(gt_run >= threshold))
    return gt_run, both_run, counts


@pytest.mark.parametrize("frames", [0, 1, 5])
@pytest.mark.parametrize("size", [0, 1, 300, 2047, 2049, 5000])
@pytest.mark.parametrize("cap", [1, 7, 255])
def test_advance_runs_equals_pixel_loop(frames, size, cap):
    rng = np.random.default_rng(size + cap + frames)
    gt_run = rng.integers(0, cap + 1, size=size, dtype=np.uint8)
    both_run = np.minimum(gt_run, rng.integers(0, cap + 1, size=size, dtype=np.uint8))
    last_target, last_preds = runs_and_noise(rng, size, 3, 0.1), runs_and_noise(rng, size, 3, 0.1)
    targets, preds = [last_target], [last_preds]
    for _ in range(frames):  # each frame mostly equal to the one before
        targets.append(np.where(rng.random(size) < 0.8, targets[-1], runs_and_noise(rng, size, 3, 0.5)))
        preds.append(np.where(rng.random(size) < 0.8, preds[-1], runs_and_noise(rng, size, 3, 0.5)))
    targets, preds = (
        np.array(targets[1:], np.uint8).reshape(frames, size),
        np.array(preds[1:], np.uint8).reshape(frames, size),
    )
    thresholds = bytes(sorted({1, min(cap, 7), cap, 0}))
    expected = advance_reference(targets, preds, last_target, last_preds, gt_run, both_run, cap, thresholds)
    counts = np.full((frames, len(thresholds), 2), -1, dtype=np.int64)  # overwritten
    label_kernels.advance_runs(
        targets, preds, frames, last_target, last_preds, gt_run, both_run, cap, thresholds, counts
    )
    np.testing.assert_array_equal(gt_run, expected[0])
    np.testing.assert_array_equal(both_run, expected[1])
    np.testing.assert_array_equal(counts, expected[2])


@pytest.mark.parametrize(
    "shape", [(3, 17, 19), (2, 1, 70), (2, 70, 1), (1, 64, 128), (2, 6, 65), (1, 48, 200), (2, 0, 5)]
)
@pytest.mark.parametrize("radius", [1, 2, 5, 13, 64, 70])
def test_boundary_band_equals_iterated_erosion(shape, radius):
    """The bit-parallel band (pairs of differing neighbours, dilated) is the band of the pinned
    definition; rows narrower and wider than a word, and radii past a word, included."""
    frames, height, width = shape
    rng = np.random.default_rng(height * width + radius)
    gts = np.repeat(np.repeat(rng.integers(0, 4, (frames, height // 3 + 1, width // 5 + 1)), 3, 1), 5, 2)
    gts = gts[:, :height, :width].astype(np.uint8)
    gts[rng.random(gts.shape) < 0.02] = 255
    preds = np.where(rng.random(gts.shape) < 0.2, 1, gts).astype(np.uint8)
    counts = np.full((frames, 2), -1, dtype=np.int64)
    band = np.full(gts.shape, 7, dtype=np.uint8)
    label_kernels.boundary_band(gts, preds, frames, height, width, radius, 255, counts, band)
    for k in range(frames):
        expected = ref_boundary_band(gts[k], radius)
        np.testing.assert_array_equal(band[k], expected.astype(np.uint8))
        assert counts[k].tolist() == [int(expected.sum()), int((expected & (preds[k] == gts[k])).sum())]
    without_band = np.zeros_like(counts)
    label_kernels.boundary_band(gts, preds, frames, height, width, radius, 255, without_band)
    np.testing.assert_array_equal(without_band, counts)


@pytest.mark.parametrize("size", SIZES)
def test_count_out_of_range_equals_numpy(size):
    ids = runs_and_noise(np.random.default_rng(size), size, 256, 0.3)
    for num_classes, also in [(124, 255), (0, 0), (256, 255), (3, 7)]:
        expected = int(((ids >= num_classes) & (ids != also)).sum())
        assert label_kernels.count_out_of_range(ids, num_classes, also) == expected


def test_bad_buffers_are_errors_not_reinterpreted_bytes():
    byte_map = np.zeros(64, np.uint8)
    hist = np.zeros(1 << 16, np.int64)
    with pytest.raises(TypeError, match=r"rows: expected 1-byte integers, got format 'f'"):
        label_kernels.joint_histogram(np.zeros(64, np.float32), byte_map, hist)
    with pytest.raises(TypeError, match="hist: expected 8-byte integers"):
        label_kernels.joint_histogram(byte_map, byte_map, np.zeros(1 << 16, np.float64))
    with pytest.raises(TypeError, match="C-contiguous"):
        label_kernels.joint_histogram(np.zeros((8, 16), np.uint8)[:, ::2], byte_map, hist)
    with pytest.raises(TypeError, match="writable"):
        readonly = hist.copy()
        readonly.flags.writeable = False
        label_kernels.joint_histogram(byte_map, byte_map, readonly)
    with pytest.raises(ValueError, match="lengths differ"):
        label_kernels.joint_histogram(byte_map, byte_map[:-1], hist)
    with pytest.raises(ValueError, match="65536"):
        label_kernels.joint_histogram(byte_map, byte_map, hist[:-1])
    with pytest.raises(ValueError, match="rows \\* 256"):
        label_kernels.vote_histogram(np.zeros(64, np.int32), byte_map, np.zeros(300, np.int64))
    with pytest.raises(TypeError, match="segments: expected 4-byte integers"):
        label_kernels.vote_histogram(np.zeros(64, np.int64), byte_map, np.zeros(256, np.int64))
    with pytest.raises(ValueError, match="counts"):
        label_kernels.advance_runs(
            byte_map, byte_map, 1, *[byte_map.copy() for _ in range(4)], 7, b"\x01", np.zeros(1, np.int64)
        )
    with pytest.raises(ValueError, match="frames"):
        label_kernels.advance_runs(
            byte_map, byte_map, 2, *[byte_map.copy() for _ in range(4)], 7, b"\x01", np.zeros(4, np.int64)
        )
    with pytest.raises(ValueError, match="radius"):
        label_kernels.boundary_band(byte_map, byte_map, 1, 8, 8, 0, 255, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="frames \\* height \\* width"):
        label_kernels.boundary_band(byte_map, byte_map, 1, 8, 9, 1, 255, np.zeros(2, np.int64))
