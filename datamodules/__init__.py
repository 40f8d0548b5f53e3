"""LightningDataModules for VSPW and VIPSeg: evaluation streaming, training clips, predictions."""

from .errors import DataError
from .index import SplitIndex, VideoEntry, index_split
from .layout import VIPSEG_LAYOUT, VSPW_LAYOUT, DatasetLayout, VIPSegLayout
from .streaming import VideoClipStream, balance_videos, chunk_bounds
from .training import TrainClipDataset, collate_clips, default_train_transform
from .vipseg import VIPSegDataModule
from .vspw import VSPWDataModule

__all__ = [
    "DataError",
    "DatasetLayout",
    "SplitIndex",
    "TrainClipDataset",
    "VIPSEG_LAYOUT",
    "VIPSegDataModule",
    "VIPSegLayout",
    "VSPWDataModule",
    "VSPW_LAYOUT",
    "VideoClipStream",
    "VideoEntry",
    "balance_videos",
    "chunk_bounds",
    "collate_clips",
    "default_train_transform",
    "index_split",
]
