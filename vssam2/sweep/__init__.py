"""Sweeps (Tables 4–7, the source comparison): many masklet configurations and refinement rules,
refined and scored in one Lightning run on any number of processes (:class:`MaskletSweep`)."""

from vssam2.sweep.grid import SOURCE_PARAMETER, SweepPoint, build_source, expand_grid, with_parameter
from vssam2.sweep.module import MaskletSweep
from vssam2.sweep.report import SweepReport, plot_sweep, sweep_table, write_sweep

__all__ = [
    "SOURCE_PARAMETER",
    "MaskletSweep",
    "SweepPoint",
    "SweepReport",
    "build_source",
    "expand_grid",
    "plot_sweep",
    "sweep_table",
    "with_parameter",
    "write_sweep",
]
