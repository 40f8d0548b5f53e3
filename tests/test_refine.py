"""Majority vote (Eq. 1–2) against a slow per-masklet reference and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vssam2.refine import majority_vote

IGNORE = 255


def slow_vote(
    seg: np.ndarray, base: np.ndarray, num_classes: int, min_area: int = 0, min_share: float = 0.0
) -> np.ndarray:
    """Eq. 1–2 read literally: for each masklet, count its base classes, paint the winner."""
    out = base.copy()
    for masklet in np.unique(seg):
        if masklet == 0:
            continue
        inside = seg == masklet
        labels = base[inside]
        labels = labels[labels != IGNORE]
        if len(labels) == 0 or inside.sum() < min_area:
            continue
        counts = np.bincount(labels, minlength=num_classes)
        winner = int(np.argmax(counts))  # first maximum = lowest class id
        if counts[winner] / len(labels) < min_share:
            continue
        out[inside] = winner
    return out


def t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x))


def test_hand_case_majority_tie_ignore_and_empty_masklet():
    seg = np.array([[1, 1, 1, 0, 2, 2, 3, 3]])
    base = np.array([[4, 4, 7, 5, 6, 1, IGNORE, IGNORE]], dtype=np.uint8)
    refined, votes = majority_vote(t(seg), t(base), num_classes=8, return_votes=True)
    # masklet 1: 4 wins 2:1; 0 stays base (5); masklet 2: tie 6 vs 1 → lowest id 1; masklet 3: no votes → base
    assert refined.tolist() == [[4, 4, 4, 5, 1, 1, IGNORE, IGNORE]]
    assert refined.dtype == torch.uint8
    assert votes.ids.tolist() == [1, 2, 3]
    assert votes.winner.tolist() == [4, 1, IGNORE]
    assert votes.applied.tolist() == [True, True, False]
    assert votes.share.tolist() == pytest.approx([2 / 3, 0.5, 0.0])


def test_ignore_pixels_do_not_vote_but_get_painted():
    seg = np.array([[5, 5, 5, 5]])
    base = np.array([[IGNORE, IGNORE, IGNORE, 2]], dtype=np.uint8)
    assert majority_vote(t(seg), t(base), num_classes=3).tolist() == [[2, 2, 2, 2]]


def test_masklet_votes_across_frames():
    seg = np.array([[[1, 1]], [[1, 1]]])  # one masklet over 2 frames
    base = np.array([[[0, 0]], [[0, 3]]], dtype=np.uint8)
    assert majority_vote(t(seg), t(base), num_classes=4).tolist() == [[[0, 0]], [[0, 0]]]


def test_min_area_and_min_share_keep_the_base():
    seg = np.array([[1, 1, 1, 2, 2, 2, 2]])
    base = np.array([[0, 1, 2, 3, 3, 3, 1]], dtype=np.uint8)
    assert majority_vote(t(seg), t(base), 4, min_share=0.5).tolist() == [[0, 1, 2, 3, 3, 3, 3]]
    assert majority_vote(t(seg), t(base), 4, min_area=4).tolist() == [[0, 1, 2, 3, 3, 3, 3]]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_area,min_share", [(0, 0.0), (5, 0.0), (0, 0.6)])
def test_matches_slow_reference_on_random_maps(seed, min_area, min_share):
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 40, size=(3, 20, 24)) * (rng.random((3, 20, 24)) < 0.8)
    seg[seg == 7] = 1000  # sparse, large ids
    base = rng.integers(0, 6, size=(3, 20, 24)).astype(np.uint8)
    base[rng.random(base.shape) < 0.1] = IGNORE
    got = majority_vote(t(seg), t(base), 6, min_area=min_area, min_share=min_share)
    np.testing.assert_array_equal(got.numpy(), slow_vote(seg, base, 6, min_area, min_share))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_sliced_histogram_equals_reference_on_large_maps(threads):
    """Maps big enough to be cut into one slice per torch thread (uneven slice bounds)."""
    rng = np.random.default_rng(threads)
    seg = rng.integers(0, 300, size=(3, 217, 301)) * (rng.random((3, 217, 301)) < 0.9)
    base = rng.integers(0, 124, size=seg.shape).astype(np.uint8) // 16 * 16  # few, clustered votes
    base[rng.random(base.shape) < 0.05] = IGNORE
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        refined, votes = majority_vote(t(seg), t(base), 124, return_votes=True)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(refined.numpy(), slow_vote(seg, base, 124))
    ids, counts = np.unique(seg[seg > 0], return_counts=True)
    assert votes.ids.tolist() == ids.tolist() and votes.area.tolist() == counts.tolist()


def blocky_maps(seed: int, frames: int = 3, height: int = 45, width: int = 130) -> tuple[np.ndarray, np.ndarray]:
    """Masklets of 10×40 blocks and a base prediction of 5×16 blocks with salt: many whole
    32-pixel blocks of one masklet (and one base id), as in real maps, and some mixed ones."""
    rng = np.random.default_rng(seed)
    seg = np.repeat(np.repeat(rng.integers(0, 9, (frames, height // 10 + 1, width // 40 + 1)), 10, 1), 40, 2)
    base = np.repeat(np.repeat(rng.integers(0, 6, (frames, height // 5 + 1, width // 16 + 1)), 5, 1), 16, 2)
    seg, base = seg[:, :height, :width].astype(np.int32), base[:, :height, :width].astype(np.uint8)
    base[rng.random(base.shape) < 0.02] = IGNORE
    return seg, base


@pytest.mark.parametrize("seed", range(3))
def test_blocky_maps_match_slow_reference(seed):
    seg, base = blocky_maps(seed)
    np.testing.assert_array_equal(majority_vote(t(seg), t(base), 6).numpy(), slow_vote(seg, base, 6))
    np.testing.assert_array_equal(
        majority_vote(t(seg), t(base), 6, min_share=0.7).numpy(), slow_vote(seg, base, 6, 0, 0.7)
    )


@pytest.mark.parametrize("maps", ["blocky", "noise", "compacted"])
def test_torch_kernels_equal_host_kernels(monkeypatch, maps):
    """The torch code that votes on CUDA tensors (bincount, gather), run here on CPU tensors,
    gives the refined map and votes of the compiled host kernels."""
    import vssam2.refine as refine

    rng = np.random.default_rng(4)
    if maps == "noise":
        seg = (rng.integers(0, 30, size=(2, 33, 70)) * (rng.random((2, 33, 70)) < 0.8)).astype(np.int32)
        base = rng.integers(0, 6, size=seg.shape).astype(np.uint8)
    else:
        seg, base = blocky_maps(5)
        if maps == "compacted":
            monkeypatch.setattr(refine, "MAX_DIRECT_BINS", 64)
            seg = seg * 10_000
    host = majority_vote(t(seg), t(base), 6, min_share=0.3, return_votes=True)
    monkeypatch.setattr(refine, "host_kernels", lambda x: False)
    monkeypatch.setattr(refine, "compiled_kernels", lambda x: False)
    on_torch = majority_vote(t(seg), t(base), 6, min_share=0.3, return_votes=True)
    assert torch.equal(on_torch[0], host[0])
    for field in ("ids", "winner", "share", "area", "applied"):
        assert torch.equal(getattr(on_torch[1], field), getattr(host[1], field)), field


def test_sparse_huge_ids_are_compacted(monkeypatch):
    import vssam2.refine as refine

    monkeypatch.setattr(refine, "MAX_DIRECT_BINS", 64)  # force the compaction path
    rng = np.random.default_rng(9)
    seg = rng.choice([0, 3, 70_000, 65_535], size=(2, 9, 11))
    base = rng.integers(0, 5, size=(2, 9, 11)).astype(np.uint8)
    refined, votes = majority_vote(t(seg), t(base), 5, return_votes=True)
    np.testing.assert_array_equal(refined.numpy(), slow_vote(seg, base, 5))
    assert votes.ids.tolist() == sorted(set(np.unique(seg).tolist()) - {0})


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_base_dtypes(dtype):
    seg = t(np.array([[1, 1, 2, 0]]))
    base = torch.tensor([[3, 3, 1, 2]], dtype=dtype)
    refined = majority_vote(seg.to(dtype if dtype != torch.uint8 else torch.int32), base, num_classes=4)
    assert refined.dtype == dtype and refined.tolist() == [[3, 3, 1, 2]]


def test_bad_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        majority_vote(t(np.zeros((2, 2), int)), t(np.zeros((2, 3), np.uint8)))
    with pytest.raises(ValueError, match="out of range"):
        majority_vote(t(np.zeros((2, 2), int)), t(np.full((2, 2), 130, np.uint8)))
    with pytest.raises(ValueError, match=">= 0"):
        majority_vote(t(np.full((2, 2), -1)), t(np.zeros((2, 2), np.uint8)))
    with pytest.raises(ValueError, match=">= 0"):  # one negative id among valid ones, int32
        majority_vote(t(np.array([[3, 0], [-7, 1]], np.int32)), t(np.zeros((2, 2), np.uint8)))
    with pytest.raises(ValueError, match="< 2\\*\\*31"):  # would wrap when narrowed to int32
        majority_vote(t(np.array([[2**32 + 1, 1]])), t(np.zeros((1, 2), np.uint8)))
    with pytest.raises(ValueError, match=">= 0"):  # -2**32 + 5 narrowed to int32 would read as 5
        majority_vote(t(np.array([[-(2**32) + 5, 1]])), t(np.zeros((1, 2), np.uint8)))
    # uint8 base ids are checked on the vote histogram: every bad value is named, and bad
    # pixels outside masklets count too; a wider base goes through the id check up front.
    base = np.array([[0, 200, 7, 255]], np.uint8)
    for dtype in (np.uint8, np.int64):
        with pytest.raises(ValueError, match=r"out of range .*: \[7, 200\]"):
            majority_vote(t(np.array([[1, 1, 0, 0]])), t(base.astype(dtype)), num_classes=5)


def test_oracle_masklets_improve_a_boundary_noisy_prediction():
    """Oracle masklets + majority vote must raise mIoU and mBIoU of sim_boundary predictions."""
    from vssam2.masklets import OracleSource
    from vssam2.metrics import VSSMetrics
    from vssam2.synthetic import SyntheticConfig, generate_video, simulate_prediction

    config = SyntheticConfig(height=60, width=96)
    rng = np.random.default_rng(1)
    base_metrics, refined_metrics = VSSMetrics(), VSSMetrics()
    for k in range(2):
        video = generate_video(rng, config, num_frames=18)
        gt = video.eval_labels  # (T, H, W) eval ids
        pred = simulate_prediction(gt, "sim_boundary", np.random.default_rng(k))
        source = OracleSource()
        source.begin_video(str(k), *gt.shape[1:])
        seg = source.add_chunk(torch.from_numpy(video.frames), 0, torch.from_numpy(gt))
        refined = majority_vote(seg, torch.from_numpy(pred))
        base_metrics.update(torch.from_numpy(pred), torch.from_numpy(gt), video=str(k), last=True)
        refined_metrics.update(refined, torch.from_numpy(gt), video=str(k), last=True)
    before, after = base_metrics.compute(), refined_metrics.compute()
    assert after["mIoU"] > before["mIoU"]
    assert after["mBIoU"] > before["mBIoU"]
