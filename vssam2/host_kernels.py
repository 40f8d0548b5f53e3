"""Which kernels run a tensor op: host kernels (compiled, numpy, OpenCV) or torch's."""

from __future__ import annotations

import torch

__all__ = ["host_kernels"]


def host_kernels(x: torch.Tensor) -> bool:
    """Whether ops on ``x`` run with the host kernels rather than torch's.

    On the CPU, the project's compiled label-map kernels (:mod:`vssam2.label_kernels`) and
    numpy's and OpenCV's byte and float32 compare / reduce kernels are SIMD, single-threaded
    and release the GIL; torch's are 3–10× slower on this kind of machine and spread each op
    over OpenMP threads that then spin against work running side by side. Elsewhere (CUDA)
    the torch code runs; the tests run it on the CPU by patching this function where it is
    used (``vssam2.metrics.functional``, ``vssam2.refine``, ``vssam2.masklets.fast_proposer``).
    """
    return x.device.type == "cpu"
