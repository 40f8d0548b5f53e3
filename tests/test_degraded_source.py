"""Tests of DegradedOracleSource: oracle masklets merged, split and leaking at set rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from vssam2.masklets import DegradedOracleSource, MaskletSource, MaskletTable, OracleSource
from vssam2.synthetic import SyntheticConfig, generate_video, video_rng

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T, H, W = 12, 48, 64
MIXED = dict(merge_rate=0.3, split_rate=0.2, leak_rate=0.3, leak_px=3)


@pytest.fixture(scope="module")
def clip() -> tuple[torch.Tensor, torch.Tensor]:
    """(T, H, W, 3) uint8 frames and (T, H, W) uint8 GT of a street clip with four things."""
    video = generate_video(video_rng(0, "degraded"), SyntheticConfig(height=H, width=W, num_things=4), T, "street")
    return torch.from_numpy(video.frames), torch.from_numpy(video.eval_labels)


def run(
    source: MaskletSource, clip: tuple[torch.Tensor, torch.Tensor], chunk: int = 5, video: str = "v"
) -> tuple[np.ndarray, MaskletTable]:
    frames, gt = clip
    source.begin_video(video, H, W)
    maps = [source.add_chunk(frames[s : s + chunk], s, gt=gt[s : s + chunk]) for s in range(0, T, chunk)]
    return torch.cat(maps).numpy(), source.end_video()


def classes_of(segments: np.ndarray, gt: np.ndarray) -> dict[int, set[int]]:
    """GT classes (ignore excluded) under each masklet id."""
    out: dict[int, set[int]] = {}
    for k in np.unique(segments[segments > 0]).tolist():
        labels = set(np.unique(gt[segments == k]).tolist()) - {255}
        out[k] = labels
    return out


@pytest.mark.parametrize("oracle_args", [{}, {"connectivity": 4, "temporal": False, "min_area": 15}])
def test_all_rates_zero_is_the_oracle(clip, oracle_args: dict) -> None:
    expected, expected_table = run(OracleSource(**oracle_args), clip)
    got, table = run(DegradedOracleSource(**oracle_args), clip)
    np.testing.assert_array_equal(got, expected)
    assert table.to_json() == expected_table.to_json()
    assert got.dtype == np.int32


def test_merge_spans_two_classes_and_persists(clip) -> None:
    gt = clip[1].numpy()
    oracle, oracle_table = run(OracleSource(), clip)
    merged, table = run(DegradedOracleSource(merge_rate=1.0), clip)
    spans = classes_of(merged, gt)
    two = [k for k, c in spans.items() if len(c) == 2]
    assert len(two) >= 3, spans
    assert max(len(c) for c in spans.values()) == 2, "a masklet is in at most one pair"
    assert len(table) < len(oracle_table)
    np.testing.assert_array_equal(merged == 0, oracle == 0)
    # Every oracle masklet lies inside one degraded masklet (merging never cuts), and a merged
    # pair keeps one id in every frame where both of its parts are.
    for k in np.unique(oracle[oracle > 0]).tolist():
        assert len(np.unique(merged[oracle == k])) == 1
    for k in two:
        parts = np.unique(oracle[merged == k])
        first_together = min(
            t for t in range(T) if all((oracle[t] == p).any() for p in parts)
        )  # the pair formed in this frame or before
        for t in range(first_together, T):
            present = [p for p in parts if (oracle[t] == p).any()]
            assert {int(merged[t][oracle[t] == p][0]) for p in present} <= {k}


def test_split_cuts_masklets_in_two(clip) -> None:
    gt = clip[1].numpy()
    oracle, oracle_table = run(OracleSource(), clip)
    split, table = run(DegradedOracleSource(split_rate=1.0), clip)
    assert len(table) > 1.5 * len(oracle_table)
    assert all(len(c) <= 1 for c in classes_of(split, gt).values()), "splitting keeps masklets class-pure"
    np.testing.assert_array_equal(split == 0, oracle == 0)
    pieces = [len(np.unique(split[oracle == k])) for k in np.unique(oracle[oracle > 0]).tolist()]
    assert max(pieces) == 2 and pieces.count(2) > 0.8 * len(pieces)
    # Half the masklets at rate 0.5.
    _, half = run(DegradedOracleSource(split_rate=0.5), clip)
    assert len(oracle_table) < len(half) < len(table)


def test_leak_grows_masklets_into_their_neighbours(clip) -> None:
    oracle, oracle_table = run(OracleSource(), clip)
    leaked, table = run(DegradedOracleSource(leak_rate=0.5, leak_px=3), clip)
    # Leaking gives no new id (a small masklet may be swallowed whole) and touches no ignore pixel.
    assert set(table.id.tolist()) <= set(oracle_table.id.tolist())
    np.testing.assert_array_equal(leaked == 0, oracle == 0)
    area = dict(zip(table.id.tolist(), table.area.tolist()))
    before = dict(zip(oracle_table.id.tolist(), oracle_table.area.tolist()))
    assert sum(area.get(k, 0) > a for k, a in before.items()) >= 3
    assert any(area.get(k, 0) < a for k, a in before.items())
    # Overwritten pixels lie within leak_px of the leaking masklet, in the same frame.
    changed = leaked != oracle
    assert changed.any()
    for t in range(T):
        for k in np.unique(leaked[t][changed[t]]).tolist():
            distance = ndimage.distance_transform_edt(oracle[t] != k)
            assert distance[changed[t] & (leaked[t] == k)].max() <= 3
    # No leak at all with leak_px 0.
    none, _ = run(DegradedOracleSource(leak_rate=0.5, leak_px=0), clip)
    np.testing.assert_array_equal(none, oracle)


def test_deterministic_per_seed_and_video(clip) -> None:
    first, _ = run(DegradedOracleSource(**MIXED), clip)
    again, _ = run(DegradedOracleSource(**MIXED), clip)
    np.testing.assert_array_equal(first, again)
    other_seed, _ = run(DegradedOracleSource(**MIXED, seed=1), clip)
    other_video, _ = run(DegradedOracleSource(**MIXED), clip, video="w")
    assert not np.array_equal(first, other_seed) and not np.array_equal(first, other_video)


@pytest.mark.parametrize("chunk", [1, 4])
def test_chunked_equals_whole(clip, chunk: int) -> None:
    whole, whole_table = run(DegradedOracleSource(**MIXED), clip, chunk=T)
    chunked, table = run(DegradedOracleSource(**MIXED), clip, chunk=chunk)
    np.testing.assert_array_equal(chunked, whole)
    assert table.to_json() == whole_table.to_json()
    assert whole_table.id[0] == 1 and len(np.unique(whole_table.id)) == len(whole_table)


def test_a_source_is_reusable_across_videos(clip) -> None:
    source = DegradedOracleSource(**MIXED)
    first, _ = run(source, clip)
    run(source, clip, video="w")
    again, _ = run(source, clip)
    np.testing.assert_array_equal(first, again)


def test_config_names_every_parameter() -> None:
    source = DegradedOracleSource(**MIXED, seed=3, merge_reach=1, connectivity=4, temporal=False, min_area=2)
    assert source.name == "degraded_oracle"
    assert source.config() == {
        "merge_rate": 0.3,
        "split_rate": 0.2,
        "leak_rate": 0.3,
        "leak_px": 3,
        "seed": 3,
        "merge_reach": 1,
        "connectivity": 4,
        "temporal": False,
        "min_area": 2,
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"merge_rate": 1.5}, "merge_rate"),
        ({"split_rate": -0.1}, "split_rate"),
        ({"leak_rate": "0.3"}, "leak_rate"),
        ({"leak_px": -1}, "leak_px"),
        ({"leak_px": 2.5}, "leak_px"),
        ({"seed": -1}, "seed"),
        ({"merge_reach": 0}, "merge_reach"),
        ({"connectivity": 6}, "connectivity"),
        ({"min_area": -1}, "min_area"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DegradedOracleSource(**kwargs)


def test_needs_the_ground_truth(clip) -> None:
    source = DegradedOracleSource(**MIXED)
    source.begin_video("v", H, W)
    with pytest.raises(ValueError, match="ground truth"):
        source.add_chunk(clip[0][:2], 0)


def test_shipped_config_builds_this_source() -> None:
    """The config's source arguments build the source (the full jsonargparse parse belongs in
    tests/test_configs.py, whose imports take seconds)."""
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "masklets" / "degraded_oracle_synthetic.yaml"
    config = yaml.safe_load(path.read_text())
    assert config["source"]["class_path"] == "vssam2.masklets.degraded.DegradedOracleSource"
    assert config["split"] == "val" and config["data"]["init_args"]["root"] == "demo_run/data/vspw"
    source = DegradedOracleSource(**config["source"]["init_args"])
    assert source.config() == {**config["source"]["init_args"], "temporal": True}
