"""VSS datasets on disk: layouts (VSPW, VIPSeg), split indexes, file reading, chunk streams."""

from vssam2.datasets.index import SplitIndex, VideoEntry, index_split
from vssam2.datasets.layout import VIPSEG_LAYOUT, VSPW_LAYOUT, DatasetLayout, VIPSegLayout
from vssam2.datasets.splits import VideoSplits
from vssam2.datasets.streaming import VideoClipStream, balance_videos, chunk_bounds

__all__ = [
    "DatasetLayout",
    "SplitIndex",
    "VIPSEG_LAYOUT",
    "VIPSegLayout",
    "VSPW_LAYOUT",
    "VideoClipStream",
    "VideoEntry",
    "VideoSplits",
    "balance_videos",
    "chunk_bounds",
    "index_split",
]
