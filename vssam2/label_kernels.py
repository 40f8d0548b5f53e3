"""Compiled CPU kernels over label maps (built from ``vssam2/_label_kernels.c``).

Run-counting histograms (the joint (GT, prediction) histogram and the majority-vote
histogram), the majority-vote painting, the bit-parallel boundary band, the mVC run lengths
and the id range count. Each takes C-contiguous integer arrays (numpy, or torch CPU tensors
through ``.numpy()``), checks their item sizes and lengths, and releases the GIL. The
functions' docstrings give their exact contracts; ``tests/test_label_kernels.py`` checks each
against numpy written from that contract.
"""

from __future__ import annotations

try:
    from vssam2._label_kernels import (
        advance_runs,
        boundary_band,
        count_out_of_range,
        joint_histogram,
        paint_votes,
        vote_histogram,
    )
except ImportError as error:  # a source checkout used without installing it
    raise ImportError(
        "vssam2's compiled label-map kernels are not built: install the project with "
        "`pip install -e .` (or `make test`), or build them in place with "
        "`python setup.py build_ext --inplace`; a C compiler and the Python headers are needed"
    ) from error

__all__ = [
    "advance_runs",
    "boundary_band",
    "count_out_of_range",
    "joint_histogram",
    "paint_votes",
    "vote_histogram",
]
