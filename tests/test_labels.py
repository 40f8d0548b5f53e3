"""Label remaps and the class table, against values written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from vssam2.labels import (
    IGNORE_INDEX,
    NUM_CLASSES,
    colorize,
    eval_to_raw,
    palette,
    raw_to_eval,
    vipseg_panoptic_to_eval,
    vipseg_panoptic_to_raw,
    vspw_classes,
)


def test_class_table_matches_the_shared_tsv():
    table = vspw_classes()
    assert table.num_classes == NUM_CLASSES == 124
    assert table.names[0] == "wall" and table.names[123] == "train"
    assert table.raw_ids == tuple(range(1, 125))
    assert len(set(table.names)) == 124


def test_raw_to_eval_remap():
    raw = np.array([[0, 1, 2], [124, 255, 57]], dtype=np.uint8)
    expected = np.array([[255, 0, 1], [123, 255, 56]], dtype=np.uint8)
    np.testing.assert_array_equal(raw_to_eval(raw), expected)
    assert raw_to_eval(raw).dtype == np.uint8


@pytest.mark.parametrize("value", [125, 200, 254, 300, -1])
def test_raw_ids_out_of_range_raise(value):
    with pytest.raises(ValueError, match=f"out of range.*{value}"):
        raw_to_eval(np.array([0, 1, value], dtype=np.int64))


def test_eval_to_raw_inverts_valid_ids():
    ids = np.array([0, 5, 123, 255], dtype=np.uint8)
    np.testing.assert_array_equal(eval_to_raw(ids), [1, 6, 124, 255])
    np.testing.assert_array_equal(raw_to_eval(eval_to_raw(ids)), ids)


def test_vipseg_panoptic_to_semantic():
    # stuff ids below 125 are semantic ids; things are class * 100 + instance
    panoptic = np.array([0, 3, 124, 1201, 1299, 12401, 501], dtype=np.uint16)
    np.testing.assert_array_equal(vipseg_panoptic_to_raw(panoptic), [0, 3, 124, 12, 12, 124, 5])
    np.testing.assert_array_equal(vipseg_panoptic_to_eval(panoptic), [IGNORE_INDEX, 2, 123, 11, 11, 123, 4])


def test_palette_is_distinct_and_ignore_is_black():
    colours = palette()
    assert colours.shape == (256, 3)
    assert len({tuple(c) for c in colours[:NUM_CLASSES]}) == NUM_CLASSES
    assert tuple(colours[IGNORE_INDEX]) == (0, 0, 0)
    ids = np.array([[0, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(colorize(ids)[0, 1], [0, 0, 0])
    np.testing.assert_array_equal(colorize(ids)[0, 0], colours[0])
