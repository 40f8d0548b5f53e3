"""Where a dataset keeps frames and masks, and how a mask decodes to evaluation ids.

The streaming, indexing and training code is shared by VSPW and VIPSeg; only these few
facts differ, so they live in one small object per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vssam2 import labels

PRED_SUFFIX = ".png"


@dataclass(frozen=True)
class DatasetLayout:
    """Folder layout of a VSS dataset (VSPW by default).

    Attributes:
        name: dataset name used in messages.
        frame_template: frame folder of a video, relative to the root; ``{video}`` is replaced.
        mask_template: mask folder of a video, relative to the root.
        frame_suffix: file suffix of frames.
        mask_suffix: file suffix of masks.
    """

    name: str = "VSPW"
    frame_template: str = "data/{video}/origin"
    mask_template: str = "data/{video}/mask"
    frame_suffix: str = ".jpg"
    mask_suffix: str = ".png"

    def frame_dir(self, root: Path, video: str) -> Path:
        """Folder holding the frames of ``video``."""
        return root / self.frame_template.format(video=video)

    def mask_dir(self, root: Path, video: str) -> Path:
        """Folder holding the ground-truth masks of ``video``."""
        return root / self.mask_template.format(video=video)

    def decode_mask(self, raw: np.ndarray, num_classes: int) -> np.ndarray:
        """Raw mask array → evaluation ids (uint8, 255 = ignore).

        Raises:
            ValueError: on ids outside the dataset's label range (the caller names the file).
        """
        return labels.raw_to_eval(raw, num_classes)


@dataclass(frozen=True)
class VIPSegLayout(DatasetLayout):
    """VIPSeg: ``images/<video>/<frame>.jpg`` and 16-bit panoptic ``panomasks/<video>/<frame>.png``."""

    name: str = "VIPSeg"
    frame_template: str = "images/{video}"
    mask_template: str = "panomasks/{video}"

    def decode_mask(self, raw: np.ndarray, num_classes: int) -> np.ndarray:
        """Panoptic values → evaluation ids (see :func:`vssam2.labels.vipseg_panoptic_to_eval`)."""
        return labels.vipseg_panoptic_to_eval(raw, num_classes)


VSPW_LAYOUT = DatasetLayout()
VIPSEG_LAYOUT = VIPSegLayout()
