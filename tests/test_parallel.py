"""vssam2.parallel: slices and concurrent calls give what a plain loop gives, errors surface."""

from __future__ import annotations

import threading

import pytest
import torch

from vssam2.parallel import MIN_SLICE, map_slices, run_all


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 5, MIN_SLICE * 2 + 7, MIN_SLICE * 5 + 1])
def test_map_slices_cover_the_range_once_in_order(threads, n):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        parts = map_slices(n, lambda a, b: (a, b), "cpu")
    finally:
        torch.set_num_threads(before)
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(prev[1] == nxt[0] for prev, nxt in zip(parts, parts[1:]))
    assert len(parts) == max(1, min(threads, n // MIN_SLICE))


def test_run_all_returns_in_order_and_reraises_after_every_call_finished():
    finished = []
    lock = threading.Lock()

    def ok(k):
        def call():
            with lock:
                finished.append(k)
            return k

        return call

    def boom():
        raise KeyError("bad chunk")

    assert run_all([ok(0), ok(1), ok(2)], "cpu") == [0, 1, 2]
    finished.clear()
    with pytest.raises(KeyError, match="bad chunk"):
        run_all([boom, ok(1), ok(2)], "cpu")
    assert sorted(finished) == [1, 2]


def test_off_the_cpu_everything_runs_in_the_calling_thread():
    me = threading.get_ident()
    assert map_slices(10 * MIN_SLICE, lambda a, b: threading.get_ident(), "meta") == [me]
    assert run_all([threading.get_ident, threading.get_ident], "meta") == [me, me]


def test_worker_threads_run_in_the_callers_inference_mode():
    """Metric states made under Lightning's inference mode can only be updated in it."""
    with torch.inference_mode():
        # One state per worker: two threads adding into one tensor would race (a lost update).
        states = [torch.zeros(3), torch.zeros(3)]

        def updater(state: torch.Tensor):
            def update():
                state.add_(1)
                return torch.is_inference_mode_enabled()

            return update

        assert run_all([updater(s) for s in states], "cpu") == [True, True]
        assert map_slices(4 * MIN_SLICE, lambda a, b: torch.is_inference_mode_enabled(), "cpu") == [True] * min(
            torch.get_num_threads(), 4
        )
    assert [s.tolist() for s in states] == [[1.0, 1.0, 1.0]] * 2
