"""LightningDataModules for VSPW and VIPSeg: evaluation streaming, training clips, predictions.

The dataset code they stand on (layouts, split indexes, reading, chunk streams, the
:class:`~vssam2.errors.DataError` they raise) is the library's: :mod:`vssam2.datasets`.
"""

from vssam2.errors import DataError

from .training import TrainClipDataset, collate_clips, default_train_transform
from .vipseg import VIPSegDataModule
from .vspw import VSPWDataModule

__all__ = [
    "DataError",
    "TrainClipDataset",
    "VIPSegDataModule",
    "VSPWDataModule",
    "collate_clips",
    "default_train_transform",
]
