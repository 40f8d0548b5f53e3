"""The score table's ``label`` column: the tracker records it, JSON keeps it, tables written before
it existed (older masklet caches) read back with −1, and the masklet cache stores it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from datamodules import VSPWDataModule
from vssam2.errors import DataError
from vssam2.fusion.statistics import StatisticsConfig, masklet_statistics
from vssam2.masklets.base import NO_LABEL, OPTIONAL_COLUMNS, TABLE_COLUMNS, MaskletSource, MaskletTable, MaskletTracker
from vssam2.masklets.cache import open_cache
from vssam2.masklets.compute import compute_cache
from vssam2.refine import count_votes
from vssam2.synthetic import SyntheticConfig, write_vspw

OLD_COLUMNS = ("id", "predicted_iou", "stability", "area", "first_frame", "last_frame")


class LabelledGridSource(MaskletSource):
    """Square cells as masklets, each labelled with a class (cell id mod 7), as SAM 3 would."""

    name = "labelled_grid"

    def __init__(self, cell: int = 16) -> None:
        super().__init__()
        self.cell = cell

    def config(self) -> dict[str, Any]:
        return {"cell": self.cell}

    def _segment(self, frames: torch.Tensor, start: int, gt: torch.Tensor | None) -> torch.Tensor:
        num_frames, height, width = frames.shape[:3]
        ys = torch.arange(height) // self.cell
        xs = torch.arange(width) // self.cell
        cells = (ys[:, None] * (width // self.cell + 1) + xs[None, :] + 1).to(torch.int32)
        for masklet in torch.unique(cells).tolist():
            self.tracker.set_scores(masklet, 0.5, 0.75, label=masklet % 7)
        return cells.expand(num_frames, height, width).clone()


def labelled_table() -> MaskletTable:
    return MaskletTable(
        id=np.array([1, 4, 9]),
        predicted_iou=np.array([0.9, np.nan, 0.5]),
        stability=np.array([0.95, 0.8, np.nan]),
        area=np.array([10, 20, 30]),
        first_frame=np.array([0, 1, 2]),
        last_frame=np.array([3, 4, 5]),
        label=np.array([3, -1, 123]),
    )


def test_label_is_a_column_and_round_trips_through_json():
    assert TABLE_COLUMNS[-1] == "label" and OPTIONAL_COLUMNS == {"label": NO_LABEL}
    table = labelled_table()
    data = json.loads(table.to_json())
    assert list(data) == list(TABLE_COLUMNS) and data["label"] == [3, -1, 123]
    back = MaskletTable.from_json(table.to_json())
    assert back.label.dtype == np.int64 and back.label.tolist() == [3, -1, 123]
    assert back.to_json() == table.to_json()


def test_a_table_built_without_labels_is_class_agnostic():
    table = MaskletTable(
        id=np.arange(1, 4),
        predicted_iou=np.full(3, np.nan),
        stability=np.full(3, np.nan),
        area=np.ones(3, np.int64),
        first_frame=np.zeros(3, np.int64),
        last_frame=np.zeros(3, np.int64),
    )
    assert table.label.dtype == np.int64 and table.label.tolist() == [-1, -1, -1]
    assert len(MaskletTable().label) == 0
    with pytest.raises(ValueError, match=r"label column of shape \(2,\) for 3 masklets"):
        MaskletTable(id=np.arange(1, 4), label=np.array([0, 1]))


def test_old_json_without_the_label_column_reads_as_minus_one():
    old = {name: column for name, column in json.loads(labelled_table().to_json()).items() if name in OLD_COLUMNS}
    table = MaskletTable.from_json(json.dumps(old))
    assert table.label.tolist() == [-1, -1, -1]
    assert table.id.tolist() == [1, 4, 9] and np.isnan(table.predicted_iou[1])
    empty = MaskletTable.from_json(json.dumps({name: [] for name in OLD_COLUMNS}))
    assert len(empty) == 0 and empty.label.dtype == np.int64


def test_other_columns_stay_required_and_lengths_must_agree():
    data = json.loads(labelled_table().to_json())
    for name in OLD_COLUMNS:
        partial = {key: value for key, value in data.items() if key != name}
        with pytest.raises(ValueError, match=rf"lacks columns \['{name}'\]"):
            MaskletTable.from_json(json.dumps(partial))
    data["label"] = [1, 2]
    with pytest.raises(ValueError, match="differ in length.*'label': 2"):
        MaskletTable.from_json(json.dumps(data))
    with pytest.raises(ValueError, match="not an object of columns"):
        MaskletTable.from_json("[]")


def test_tracker_records_labels():
    tracker = MaskletTracker()
    tracker.set_scores(2, 0.9, 0.95, label=17)
    tracker.set_scores(300, label=5)  # grows the arrays past their first size
    tracker.set_scores(7, 0.1, 0.2)  # a class-agnostic masklet
    seg = torch.zeros(2, 4, 4, dtype=torch.int32)
    seg[0, 0, 0], seg[1, 1, 1], seg[1, 2, 2], seg[0, 3, 3] = 2, 7, 300, 8  # 8: never scored
    tracker.observe(seg, start=0)
    table = tracker.table()
    assert table.id.tolist() == [2, 7, 8, 300]
    assert table.label.tolist() == [17, -1, -1, 5]
    assert table.predicted_iou[0] == pytest.approx(0.9) and np.isnan(table.predicted_iou[3])
    tracker.set_scores(2, 0.8, 0.9, label=3)  # re-scoring replaces the label too
    assert tracker.table().label.tolist() == [3, -1, -1, 5]


def test_statistics_accept_a_labelled_table():
    seg = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 2]]], dtype=torch.int32)
    base = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 1]]], dtype=torch.uint8)
    table = MaskletTable(
        id=np.array([1, 2]),
        predicted_iou=np.array([0.9, 0.8]),
        stability=np.array([0.95, 0.9]),
        area=np.array([4, 4]),
        first_frame=np.zeros(2, np.int64),
        last_frame=np.zeros(2, np.int64),
        label=np.array([0, 1]),
    )
    counts = count_votes(seg, base, 2, 255)
    with_labels = masklet_statistics(counts, StatisticsConfig(2), 1, 0, table)
    table.label = np.full(2, NO_LABEL, np.int64)
    without = masklet_statistics(counts, StatisticsConfig(2), 1, 0, table)
    assert torch.equal(with_labels.features, without.features)  # labels are not (yet) a feature


# ------------------------------------------------------------------------------ the masklet cache


@pytest.fixture(scope="module")
def dm(tmp_path_factory: pytest.TempPathFactory) -> VSPWDataModule:
    root = tmp_path_factory.mktemp("table_label_data") / "vspw"
    write_vspw(
        root, SyntheticConfig(height=32, width=48, min_frames=6, max_frames=8, videos={"train": 1, "val": 2, "test": 1})
    )
    return VSPWDataModule(root=str(root), clip_len=4)


def test_cache_stores_labels_and_reads_old_tables(dm: VSPWDataModule, tmp_path: Path):
    summary = compute_cache(LabelledGridSource(), dm, "val", cache_root=tmp_path, progress=False)
    cache = open_cache(summary.directory)
    video = summary.computed[0]
    _, table = cache.read_video(video)
    assert len(table) > 0 and table.label.tolist() == [masklet % 7 for masklet in table.id.tolist()]

    # A table written before the label column existed: still readable, every label −1.
    path = cache.table_path(video)
    old = {name: column for name, column in json.loads(path.read_text()).items() if name != "label"}
    path.write_text(json.dumps(old))
    old_table = open_cache(summary.directory).read_table(video)
    assert old_table.label.tolist() == [-1] * len(table)
    np.testing.assert_array_equal(old_table.area, table.area)

    # Resuming does not recompute a video whose table is in the old format.
    again = compute_cache(LabelledGridSource(), dm, "val", cache_root=tmp_path, progress=False)
    assert again.computed == [] and sorted(again.skipped) == sorted(summary.computed)

    # A table with columns of different lengths is corrupt, and the error names the file.
    old["label"] = [0]
    path.write_text(json.dumps(old))
    with pytest.raises(DataError, match=rf"corrupt score table {path}.*differ in length"):
        open_cache(summary.directory).read_table(video)
