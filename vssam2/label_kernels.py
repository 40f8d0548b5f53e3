"""Compiled CPU kernels over label maps (built from ``vssam2/_label_kernels.c``), when present.

Run-counting histograms (the joint (GT, prediction) histogram and the majority-vote
histogram), the majority-vote painting, the bit-parallel boundary band, the mVC run lengths
and the id range count. Each takes C-contiguous integer arrays (numpy, or torch CPU tensors
through ``.numpy()``), checks their item sizes and lengths, and releases the GIL. The
functions' docstrings give their exact contracts; ``tests/test_label_kernels.py`` checks each
against numpy written from that contract.

The kernels are optional. :data:`AVAILABLE` says whether they run: it is False when the
extension was not built (no C compiler at install time; one warning then names the faster
path) or when the environment variable ``VSSAM2_NO_KERNELS=1`` switches them off (no
warning: that was deliberate). Callers check it (through
:func:`vssam2.host_kernels.compiled_kernels` for tensors) and otherwise take their numpy /
torch code, which gives the same numbers, more slowly. Without the kernels, these names are
not defined: using one is an AttributeError that says why.
"""

from __future__ import annotations

import os
import warnings

# Set to "1" to run without the compiled kernels even where they are built (to compare the
# fallback's numbers, or to rule the kernels out when chasing a problem).
DISABLE_VARIABLE: str = "VSSAM2_NO_KERNELS"

BUILD_HINT: str = (
    "build the compiled kernels: pip install -e . with a C compiler and the Python headers, "
    "or python setup.py build_ext --inplace"
)

KERNELS = ("advance_runs", "boundary_band", "count_out_of_range", "joint_histogram", "paint_votes", "vote_histogram")


class KernelsMissingWarning(UserWarning):
    """The compiled label-map kernels are not built; the slower numpy / torch code runs instead."""


def _switched_off() -> bool:
    """Whether :data:`DISABLE_VARIABLE` asks to run without the kernels.

    Raises:
        ValueError: if the variable holds anything but "1", "0" or nothing.
    """
    value = os.environ.get(DISABLE_VARIABLE, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(
            f"environment variable {DISABLE_VARIABLE}={value!r}: expected 1 (kernels off) or 0 / unset (on)"
        )
    return value == "1"


__all__ = ["AVAILABLE", "BUILD_HINT", "DISABLE_VARIABLE", "KERNELS", "KernelsMissingWarning"]

AVAILABLE: bool
_why_not: str  # why the kernels do not run, for the error of a missing name
if _switched_off():
    AVAILABLE = False
    _why_not = f"they are switched off by {DISABLE_VARIABLE}=1"
else:
    try:
        from vssam2._label_kernels import (
            advance_runs,
            boundary_band,
            count_out_of_range,
            joint_histogram,
            paint_votes,
            vote_histogram,
        )
    except ImportError as error:  # no C compiler at install time, or a source checkout never built
        AVAILABLE = False
        _why_not = f"they are not built ({error})"
        warnings.warn(
            "vssam2's compiled label-map kernels (vssam2._label_kernels) are not built, so label maps "
            "are scored and voted with the slower numpy / torch code (same numbers). For the faster "
            f"path, {BUILD_HINT}.",
            KernelsMissingWarning,
            stacklevel=2,  # the importing line: warnings skips importlib's frames
        )
    else:
        AVAILABLE = True
        _why_not = ""
        __all__ += [
            "advance_runs",
            "boundary_band",
            "count_out_of_range",
            "joint_histogram",
            "paint_votes",
            "vote_histogram",
        ]


def __getattr__(name: str) -> object:
    """A kernel's name without the kernels: an error that says why (callers check AVAILABLE)."""
    if name in KERNELS:
        raise AttributeError(
            f"vssam2.label_kernels.{name} is not available: {_why_not}; check label_kernels.AVAILABLE "
            f"before calling a kernel (to {BUILD_HINT})"
        )
    raise AttributeError(f"module 'vssam2.label_kernels' has no attribute {name!r}")
