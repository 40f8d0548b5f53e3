"""I-SAM3: masklets painted with the class of the prompt that produced them (vssam2.named_masklets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vssam2.masklets.base import MaskletTable
from vssam2.named_masklets import label_map


def _table(ids, labels) -> MaskletTable:
    n = len(ids)
    return MaskletTable(
        id=np.asarray(ids, np.int64),
        predicted_iou=np.full(n, 0.9),
        stability=np.full(n, np.nan),
        area=np.ones(n, np.int64),
        first_frame=np.zeros(n, np.int64),
        last_frame=np.zeros(n, np.int64),
        label=np.asarray(labels, np.int64),
    )


def test_each_masklet_takes_its_label_and_uncovered_pixels_are_255() -> None:
    segments = torch.tensor([[[0, 3, 3], [7, 7, 0]], [[3, 0, 12], [12, 12, 7]]], dtype=torch.int32)
    painted = label_map(segments, _table([3, 7, 12, 40], [5, 0, 123, 9]), "t.json", 124)
    want = torch.tensor([[[255, 5, 5], [0, 0, 255]], [[5, 255, 123], [123, 123, 0]]], dtype=torch.uint8)
    assert painted.dtype == torch.uint8 and torch.equal(painted, want)
    # a class-agnostic masklet among named ones paints nothing
    painted = label_map(segments, _table([3, 7, 12], [5, -1, 2]), "t.json", 124)
    assert int(painted[0, 1, 0]) == 255 and int(painted[0, 0, 1]) == 5
    empty = label_map(torch.zeros(1, 2, 2, dtype=torch.int32), _table([], []), "t.json", 124)
    assert bool((empty == 255).all())


def test_bad_tables_are_refused_naming_the_file() -> None:
    segments = torch.tensor([[[1, 2]]], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"cache/v/table.json: masklets \[2\] .* not in the score table"):
        label_map(segments, _table([1], [4]), "cache/v/table.json", 124)
    with pytest.raises(ValueError, match="cache/v/table.json: the masklets carry no class .*sam3_video"):
        label_map(segments, _table([1, 2], [-1, -1]), "cache/v/table.json", 124)
    with pytest.raises(ValueError, match="cache/v/table.json: masklet label 124 is not a class id"):
        label_map(segments, _table([1, 2], [3, 124]), "cache/v/table.json", 124)
