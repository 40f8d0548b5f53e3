"""Which kernels run a tensor op: host kernels (compiled, numpy, OpenCV) or torch's."""

from __future__ import annotations

import torch

from vssam2 import label_kernels

__all__ = ["compiled_kernels", "host_kernels"]


def host_kernels(x: torch.Tensor) -> bool:
    """Whether ops on ``x`` run with the host kernels rather than torch's.

    On the CPU, numpy's and OpenCV's byte and float32 compare / reduce kernels (and the
    project's compiled label-map kernels, see :func:`compiled_kernels`) are SIMD,
    single-threaded and release the GIL; torch's are several times slower on the machines of
    benchmarks/README.md and spread each op over OpenMP threads that then spin against work
    running side by side.
    Elsewhere (CUDA) the torch code runs; the tests run it on the CPU by patching this function
    (and :func:`compiled_kernels`) where it is used (``vssam2.metrics.functional``,
    ``vssam2.refine``, ``vssam2.masklets.fast_proposer``).
    """
    return x.device.type == "cpu"


def compiled_kernels(x: torch.Tensor) -> bool:
    """Whether the compiled label-map kernels (:mod:`vssam2.label_kernels`) run ops on ``x``.

    They do for host tensors (:func:`host_kernels`) when the extension is built and not
    switched off (:data:`vssam2.label_kernels.AVAILABLE`). The numpy / OpenCV host paths need
    no compiler and do not depend on this; where this is False, each compiled call site takes
    its torch code instead (on the CPU too), which gives the same numbers.
    """
    return label_kernels.AVAILABLE and host_kernels(x)
