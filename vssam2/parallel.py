"""Running CPU kernels on all cores from Python threads.

Several kernels this project leans on are single-threaded on the CPU (``torch.bincount``,
``index_select``, OpenCV's 8-bit morphology and histograms at 480p) and release the GIL while
they run, so Python threads are enough to use every core. CUDA kernels are parallel already:
there everything runs in the calling thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")

# Below this many elements per slice, a thread costs more than it saves.
MIN_SLICE: int = 1 << 16


@functools.cache
def _executor(kind: str, workers: int) -> ThreadPoolExecutor:
    # One pool per kind: a call run by run_all may itself use map_slices, and sharing one
    # pool would let the outer calls hold every thread while their inner slices wait.
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"vssam2-{kind}")


def _in_caller_mode(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` run under the calling thread's autograd mode (thread-local in torch): inside a
    Lightning test loop the metric states are inference tensors, which only code running in
    inference mode may update in place."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def call(*args: Any) -> T:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(*args)

    return call


def cpu_workers(device: torch.device | str) -> int:
    """Threads to use for work on ``device``: torch's CPU thread count, 1 off the CPU."""
    return max(1, torch.get_num_threads()) if torch.device(device).type == "cpu" else 1


def map_slices(n: int, fn: Callable[[int, int], T], device: torch.device | str) -> list[T]:
    """Runs ``fn(start, stop)`` over contiguous slices of ``range(n)``, one per CPU thread.

    Args:
        n: length of the range to cut.
        fn: called once per slice; it must only write to its own slice of shared outputs.
        device: where the data lives (one slice, in this thread, off the CPU).

    Returns:
        The results of ``fn``, in slice order.
    """
    workers = max(1, min(cpu_workers(device), n // MIN_SLICE))
    if workers == 1:
        return [fn(0, n)]
    bounds = [n * i // workers for i in range(workers + 1)]
    return list(_executor("slices", workers).map(_in_caller_mode(fn), bounds[:-1], bounds[1:]))


def run_all(calls: Sequence[Callable[[], Any]], device: torch.device | str) -> list[Any]:
    """Runs independent calls on up to one thread per CPU core and returns their results.

    The first exception raised by any call is re-raised here, after every call has finished
    (no call is left running in the background).
    """
    workers = min(cpu_workers(device), len(calls))
    if workers <= 1:
        return [call() for call in calls]
    futures = [_executor("calls", workers).submit(_in_caller_mode(call)) for call in calls]
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
    return [f.result() for f in futures]
