"""Weight-free masklet sources (superpixels, GT oracle) and the IoU linking helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from vssam2.masklets.base import MaskletSource, MaskletTable
from vssam2.masklets.oracle import OracleSource
from vssam2.masklets.superpixel import SuperpixelSource, link_ids
from vssam2.synthetic import SyntheticConfig, generate_video

IGNORE = 255
SOURCES = {
    "slic": lambda **kw: SuperpixelSource(method="slic", n_segments=40, **kw),
    "felzenszwalb": lambda **kw: SuperpixelSource(method="felzenszwalb", scale=50.0, min_size=20, **kw),
    "oracle": lambda **kw: OracleSource(**kw),
}


@pytest.fixture(scope="module")
def clip():
    video = generate_video(np.random.default_rng(0), SyntheticConfig(height=48, width=64), num_frames=6)
    assert (video.eval_labels == IGNORE).any() and (video.eval_labels != IGNORE).any()
    return video.frames, video.eval_labels


def run(
    source: MaskletSource, frames: np.ndarray, gt: np.ndarray | None, chunk: int
) -> tuple[np.ndarray, MaskletTable]:
    source.begin_video("v", frames.shape[1], frames.shape[2])
    maps = []
    for start in range(0, len(frames), chunk):
        g = None if gt is None else torch.from_numpy(gt[start : start + chunk])
        seg = source.add_chunk(torch.from_numpy(frames[start : start + chunk]), start, gt=g)
        assert seg.dtype == torch.int32 and tuple(seg.shape) == frames[start : start + chunk].shape[:3]
        maps.append(seg.numpy().copy())
    return np.concatenate(maps), source.end_video()


def is_relabelling(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b partition the pixels identically (a bijection between their labels)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def slow_components(gt: np.ndarray, connectivity: int) -> np.ndarray:
    """Per-class scipy labelling, one class at a time (the reference for the oracle)."""
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    out = np.zeros(gt.shape, np.int64)
    offset = 0
    for c in np.unique(gt):
        if c == IGNORE:
            continue
        lab, num = ndimage.label(gt == c, structure)
        out[lab > 0] = lab[lab > 0] + offset
        offset += num
    return out


def check_ids_live_contiguously(maps: np.ndarray) -> None:
    """Ids are unique within the video: an id, once gone, never comes back for something else."""
    for i in np.unique(maps[maps > 0]):
        frames = np.flatnonzero((maps == i).any(axis=(1, 2)))
        assert np.array_equal(frames, np.arange(frames[0], frames[-1] + 1)), i


# --- link_ids -------------------------------------------------------------------------------


def test_link_ids_hand_made_case():
    prev = np.zeros((4, 4), np.int32)
    prev[:, :2] = 7
    prev[:, 2:] = 9  # 8 px each
    new = np.zeros((4, 4), np.int64)
    new[:, :2] = 1  # = id 7 exactly: IoU 1
    new[:3, 2:] = 4  # 6 of id 9's 8 px: IoU 0.75 -> 9
    new[3, 2] = 6  # IoU 1/8 with id 9 -> fresh
    ids, nxt = link_ids(prev, new, next_id=20)
    expected = np.array([[7, 7, 9, 9]] * 3 + [[7, 7, 20, 0]])
    np.testing.assert_array_equal(ids, expected)  # label 0 stays 0, fresh ids from next_id
    assert ids.dtype == np.int32 and nxt == 21
    big = np.where(prev > 0, prev + 10**6, 0)  # ids far above the pixel count: the sorting path
    ids, nxt = link_ids(big, new, next_id=2 * 10**6)
    np.testing.assert_array_equal(ids, np.where(expected == 20, 2 * 10**6, np.where(expected > 0, expected + 10**6, 0)))
    with pytest.raises(ValueError, match="non-negative"):
        link_ids(np.where(prev == 9, -1, prev), new, next_id=20)


def test_link_ids_no_previous_frame_and_non_consecutive_labels():
    new = np.array([[0, 5, 5], [2, 2, 0]])
    ids, nxt = link_ids(None, new, next_id=3)
    np.testing.assert_array_equal(ids, [[0, 4, 4], [3, 3, 0]])  # increasing label order
    assert nxt == 5
    ids, nxt = link_ids(np.zeros((2, 3), np.int32), new, next_id=3)  # an empty previous frame
    np.testing.assert_array_equal(ids, [[0, 4, 4], [3, 3, 0]])


def test_link_ids_greedy_one_to_one_by_iou():
    prev = np.full((4, 4), 3, np.int32)  # one segment, 16 px
    new = np.ones((4, 4), np.int64)
    new[:, 1:] = 2  # label 1: IoU 0.25, label 2: IoU 0.75
    ids, nxt = link_ids(prev, new, next_id=10, iou_thresh=0.2)
    assert ids[0, 0] == 10 and ids[0, 3] == 3 and nxt == 11  # the best pair wins, not the lower label
    # Ties at IoU 0.5: one-to-one, the lower label takes the id, the other gets a fresh one.
    new[:, 2:], new[:, :2] = 2, 1
    ids, _ = link_ids(prev, new, next_id=10)
    assert ids[0, 0] == 3 and ids[0, 3] == 10
    # One new segment, two previous ones at IoU 0.5: the lower previous id.
    prev[:, :2], prev[:, 2:] = 8, 5
    ids, nxt = link_ids(prev, np.ones((4, 4), np.int64), next_id=10)
    assert (ids == 5).all() and nxt == 10


def test_link_ids_same_class_and_threshold():
    prev = np.ones((4, 4), np.int32) * 6
    new = np.ones((4, 4), np.int64)
    same = np.zeros((4, 4), np.uint8)
    ids, _ = link_ids(prev, new, 10, same_class=(same, same))
    assert (ids == 6).all()
    ids, _ = link_ids(prev, new, 10, same_class=(same, same + 1))  # same shape, other class
    assert (ids == 10).all()
    new[:2] = 2  # two halves: IoU 0.5 each
    ids, _ = link_ids(prev, new, 10, iou_thresh=0.6)
    assert set(np.unique(ids)) == {10, 11}
    with pytest.raises(ValueError, match="iou_thresh"):
        link_ids(prev, new, 10, iou_thresh=0.0)
    with pytest.raises(ValueError, match="shape"):
        link_ids(prev[:2], new, 10)


def test_link_ids_sparse_joint_histogram_path():
    rng = np.random.default_rng(0)
    prev = rng.permutation(64 * 64).reshape(64, 64).astype(np.int32) + 1  # one id per pixel
    new = prev.astype(np.int64)  # 4096 x 4097 bins: the np.unique path
    ids, nxt = link_ids(prev, new, next_id=5000)
    np.testing.assert_array_equal(ids, prev)
    assert nxt == 5000


# --- both sources -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SOURCES))
def test_chunking_invariance_and_table(kind, clip):
    frames, gt = clip
    whole, table = run(SOURCES[kind](), frames, gt, chunk=len(frames))
    for chunk in (1, 2, 4):
        maps, chunk_table = run(SOURCES[kind](), frames, gt, chunk=chunk)
        np.testing.assert_array_equal(maps, whole)
        assert chunk_table.to_json() == table.to_json()
    ids = np.unique(whole[whole > 0])
    np.testing.assert_array_equal(table.id, ids)
    np.testing.assert_array_equal(table.area, [(whole == i).sum() for i in ids])
    present = [np.flatnonzero((whole == i).any(axis=(1, 2))) for i in ids]
    np.testing.assert_array_equal(table.first_frame, [p[0] for p in present])
    np.testing.assert_array_equal(table.last_frame, [p[-1] for p in present])
    assert np.isnan(table.predicted_iou).all() and np.isnan(table.stability).all()
    assert ids.min() == 1
    check_ids_live_contiguously(whole)


@pytest.mark.parametrize("kind", list(SOURCES))
def test_static_clip_keeps_ids_and_temporal_off_does_not(kind, clip):
    frames, gt = clip
    static = np.repeat(frames[2:3], 4, axis=0)
    static_gt = np.repeat(gt[2:3], 4, axis=0)
    maps, table = run(SOURCES[kind](), static, static_gt, chunk=3)
    assert all(np.array_equal(m, maps[0]) for m in maps)
    assert (table.first_frame == 0).all() and (table.last_frame == 3).all()
    maps, _ = run(SOURCES[kind](temporal=False), static, static_gt, chunk=3)
    assert all(is_relabelling(m, maps[0]) for m in maps)
    seen = [set(np.unique(m[m > 0]).tolist()) for m in maps]
    assert sum(len(s) for s in seen) == len(set().union(*seen))  # fresh ids in every frame


@pytest.mark.parametrize("kind", list(SOURCES))
def test_wrong_order_chunk_raises(kind, clip):
    frames, gt = clip
    source = SOURCES[kind]()
    source.begin_video("v", 48, 64)
    source.add_chunk(torch.from_numpy(frames[:2]), 0, gt=torch.from_numpy(gt[:2]))
    with pytest.raises(ValueError, match="expected next"):
        source.add_chunk(torch.from_numpy(frames[3:5]), 3, gt=torch.from_numpy(gt[3:5]))


# --- superpixels ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
@pytest.mark.parametrize("temporal", [True, False])
def test_superpixels_cover_everything_one_id_per_superpixel(method, temporal, clip):
    frames, _ = clip
    source = SuperpixelSource(method=method, n_segments=40, temporal=temporal)
    maps, _ = run(source, frames, None, chunk=4)
    assert (maps > 0).all()
    for frame, seg in zip(frames, maps):
        assert is_relabelling(seg, source.superpixels(frame))
    if not temporal:
        per_frame = [set(np.unique(m).tolist()) for m in maps]
        assert sum(map(len, per_frame)) == len(set().union(*per_frame))
    else:
        assert len(np.unique(maps)) < sum(len(np.unique(m)) for m in maps)  # the moving clip links some


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
def test_superpixels_new_ids_when_the_frame_changes_completely(method):
    frames = np.zeros((3, 48, 64, 3), np.uint8)
    frames[0, :, 32:] = 255  # left | right
    frames[1, :, 32:] = 255
    frames[2, 24:] = 255  # top / bottom: IoU 1/3 with any half of frame 1
    maps, _ = run(SuperpixelSource(method=method, n_segments=2), frames, None, chunk=2)
    np.testing.assert_array_equal(maps[0], maps[1])
    assert not set(np.unique(maps[2])) & set(np.unique(maps[1]))


def test_superpixel_config_and_validation():
    source = SuperpixelSource(method="felzenszwalb", scale=30.0, temporal=False)
    assert source.name == "superpixel"
    assert source.config() == {
        "method": "felzenszwalb",
        "n_segments": 200,
        "compactness": 10.0,
        "scale": 30.0,
        "sigma": 0.8,
        "min_size": 50,
        "temporal": False,
    }
    with pytest.raises(ValueError, match="method"):
        SuperpixelSource(method="watershed")


# --- oracle --------------------------------------------------------------------------------


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("temporal", [True, False])
def test_oracle_masklets_are_class_pure_components_partitioning_valid_pixels(connectivity, temporal, clip):
    frames, gt = clip
    maps, _ = run(OracleSource(connectivity=connectivity, temporal=temporal), frames, gt, chunk=4)
    np.testing.assert_array_equal(maps > 0, gt != IGNORE)  # 0 exactly at ignore pixels
    for g, seg in zip(gt, maps):
        assert is_relabelling(seg, slow_components(g, connectivity))
    # Class-pure over the whole video, even through temporal links.
    pairs = np.unique(np.stack([maps[maps > 0], gt[maps > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]


def test_oracle_min_area_drops_small_components(clip):
    frames, gt = clip
    maps, table = run(OracleSource(min_area=60), frames, gt, chunk=2)
    dropped = 0
    for g, seg in zip(gt, maps):
        ref = slow_components(g, 8)
        area = np.bincount(ref.ravel())
        small = (area < 60)[ref] & (ref > 0)
        dropped += int(small.any())
        np.testing.assert_array_equal(seg == 0, (g == IGNORE) | small)
        assert is_relabelling(seg[seg > 0], ref[seg > 0])
    assert dropped >= 3  # the clip has small components in several frames
    assert (table.area >= 60).all()


def test_oracle_links_only_same_class_and_overlapping_components():
    gt = np.zeros((4, 8, 8), np.uint8)
    gt[0, :, :4], gt[0, :, 4:] = 1, 2
    gt[1, :, :4], gt[1, :, 4:] = 3, 4  # same shapes, other classes: new ids
    gt[2, :4], gt[2, 4:] = 3, 4  # other shapes: new ids
    gt[3] = gt[2]
    gt[3, 0, 0] = IGNORE  # nearly the same: same ids
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    maps, table = run(OracleSource(), frames, gt, chunk=1)
    per_frame = [sorted(set(np.unique(m).tolist()) - {0}) for m in maps]
    assert per_frame[:3] == [[1, 2], [3, 4], [5, 6]]
    np.testing.assert_array_equal(maps[3][gt[3] != IGNORE], maps[2][gt[3] != IGNORE])
    assert maps[3][0, 0] == 0
    np.testing.assert_array_equal(table.id, [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(table.last_frame, [0, 0, 1, 1, 3, 3])


def test_oracle_needs_gt_and_valid_parameters(clip):
    frames, gt = clip
    source = OracleSource()
    assert source.name == "oracle"
    assert source.config() == {"connectivity": 8, "temporal": True, "min_area": 0}
    source.begin_video("v", 48, 64)
    with pytest.raises(ValueError, match="oracle"):
        source.add_chunk(torch.from_numpy(frames[:2]), 0)
    with pytest.raises(ValueError, match="gt"):
        source.add_chunk(torch.from_numpy(frames[:2]), 0, gt=torch.from_numpy(gt[:1]))
    with pytest.raises(ValueError, match="connectivity"):
        OracleSource(connectivity=6)
