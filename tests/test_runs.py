"""vssam2.runs against a plain Python scan of the same arrays."""

from __future__ import annotations

import numpy as np
import pytest

import vssam2.runs
from vssam2.runs import count_runs, run_lengths, run_starts


def slow_run_starts(arrays: list[np.ndarray]) -> list[int]:
    size = arrays[0].size
    return [i for i in range(size) if i == 0 or any(a[i] != a[i - 1] for a in arrays)]


@pytest.mark.parametrize("block", [1, 2, 5, 64, 1 << 19])
@pytest.mark.parametrize("size", [0, 1, 2, 63, 64, 65, 1000])
def test_run_starts_and_counts_match_a_python_scan(monkeypatch, block, size):
    monkeypatch.setattr(vssam2.runs, "RUN_BLOCK", block)
    rng = np.random.default_rng(size + block)
    # runs of random length 1..40 in two arrays of different dtypes that change independently
    a = np.repeat(rng.integers(0, 5, size, dtype=np.int32), rng.integers(1, 40, size))[:size]
    b = np.repeat(rng.integers(0, 3, size, dtype=np.uint8), rng.integers(1, 40, size))[:size]
    starts = run_starts((a, b), max_fraction=1.0)
    assert starts.tolist() == slow_run_starts([a, b])
    assert run_lengths(starts, size).sum() == size
    codes = (a[starts].astype(np.int64) << 8) | b[starts]
    expected = np.bincount((a.astype(np.int64) << 8) | b, minlength=5 * 256)
    np.testing.assert_array_equal(count_runs(codes, starts, size, minlength=5 * 256), expected)


def test_noisy_arrays_give_none_and_bad_shapes_raise():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 200, 10_000, dtype=np.uint8)
    assert run_starts((noise,)) is None  # ≈ 99% of positions start a run
    assert run_starts((np.sort(noise),)) is not None  # 200 runs
    with pytest.raises(ValueError, match="one size"):
        run_starts((noise, noise[:-1]))
    with pytest.raises(ValueError, match="1-D"):
        run_starts((noise.reshape(100, 100),))
