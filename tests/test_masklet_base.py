"""Aggregator and masklet table against hand-made cases and a slow painter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vssam2.masklets import MaskletTable, MaskletTracker, aggregate_masks, paint_order


def slow_paint(masks: np.ndarray, ids: np.ndarray, order: list[int]) -> np.ndarray:
    out = np.zeros(masks.shape[1:], dtype=np.int32)
    for k in order:
        out[masks[k]] = ids[k]
    return out


def test_area_order_keeps_small_masks_visible():
    big = torch.zeros(6, 6, dtype=torch.bool)
    big[:, :] = True
    small = torch.zeros(6, 6, dtype=torch.bool)
    small[2:4, 2:4] = True
    for masks, ids in [
        (torch.stack([small, big]), torch.tensor([7, 3])),
        (torch.stack([big, small]), torch.tensor([3, 7])),
    ]:
        seg = aggregate_masks(masks, ids, order="area")
        assert seg[2, 2] == 7 and seg[0, 0] == 3 and seg.dtype == torch.int32


def test_score_order_puts_best_on_top_and_uncovered_is_zero():
    a = torch.zeros(4, 4, dtype=torch.bool)
    a[:2] = True
    b = torch.zeros(4, 4, dtype=torch.bool)
    b[1:3] = True
    seg = aggregate_masks(torch.stack([a, b]), torch.tensor([1, 2]), scores=torch.tensor([0.9, 0.5]), order="score")
    assert seg[1].tolist() == [1, 1, 1, 1]  # overlap row: the better-scored mask 1 wins
    assert seg[3].tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="score"):
        aggregate_masks(torch.stack([a, b]), torch.tensor([1, 2]), order="score")
    with pytest.raises(ValueError, match="positive"):
        aggregate_masks(torch.stack([a, b]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="order"):
        paint_order(torch.stack([a, b]), order="random")


@pytest.mark.parametrize("order", ["area", "score", "given"])
@pytest.mark.parametrize("block", [1, 3, 32])
def test_aggregate_matches_slow_painter(order, block):
    rng = np.random.default_rng(0)
    masks = rng.random((9, 2, 12, 14)) < 0.3  # 9 masks over a 2-frame chunk
    ids = rng.permutation(50)[:9] + 1
    scores = rng.random(9)
    seg = aggregate_masks(torch.from_numpy(masks), torch.from_numpy(ids), torch.from_numpy(scores), order, block)
    area = masks.reshape(9, -1).sum(1)
    py_order = {
        "area": sorted(range(9), key=lambda k: -area[k]),
        "score": sorted(range(9), key=lambda k: scores[k]),
        "given": list(range(9)),
    }[order]
    np.testing.assert_array_equal(seg.numpy(), slow_paint(masks, ids, py_order))


def test_tracker_table_and_json_round_trip():
    tracker = MaskletTracker()
    seg = torch.zeros(3, 4, 4, dtype=torch.int32)
    seg[0, :2, :2] = 5
    seg[2, :1, :1] = 5
    seg[1:, 3, 3] = 2
    tracker.set_scores(5, 0.9, 0.95)
    tracker.observe(seg, start=10)
    tracker.observe(torch.full((1, 4, 4), 2, dtype=torch.int32), start=13)
    table = tracker.table()
    assert table.id.tolist() == [2, 5]
    assert table.area.tolist() == [2 + 16, 5]
    assert table.first_frame.tolist() == [11, 10]
    assert table.last_frame.tolist() == [13, 12]
    assert np.isnan(table.predicted_iou[0]) and table.predicted_iou[1] == pytest.approx(0.9)
    back = MaskletTable.from_json(table.to_json())
    for name in ("id", "area", "first_frame", "last_frame"):
        np.testing.assert_array_equal(getattr(back, name), getattr(table, name))
    np.testing.assert_array_equal(back.stability, table.stability)
    with pytest.raises(ValueError, match="lacks columns"):
        MaskletTable.from_json("{}")
