"""Zero-shot video semantic segmentation from masklets that carry a class (I-SAM3).

A text-prompted source (:class:`vssam2.masklets.sam3_video.SAM3VideoSource`) records in the
score table the class of the prompt that produced each masklet (``label``). Painting every
masklet with its label is a prediction with no training at all; pixels outside every
masklet are 255 ("no prediction", ``I-SAM3``) or filled from a base model
(``I-SAM3_base``, as I-SAM2_base). Overlaps need no rule here: the segment map holds one
masklet per pixel, and the source resolved overlaps when it built it (a higher detection
score paints on top). The rows are scored by the same path as every other model, so they
join Table 3 through ``python -m vssam2.tables``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vssam2.labels import IGNORE_INDEX
from vssam2.masklets.base import MaskletTable
from vssam2.metrics.config import MetricConfig
from vssam2.replay import PaintedRows


def label_map(segments: torch.Tensor, table: MaskletTable, origin: str, num_classes: int) -> torch.Tensor:
    """(T, H, W) uint8 class of each pixel's masklet, 255 where no masklet covers it.

    Args:
        segments: (T, H, W) int segment map (0 = no masklet).
        table: the video's score table (its ``label`` column names each masklet's class).
        origin: where the table comes from (for errors).
        num_classes: C; a label must be −1 (none) or 0…C−1.

    Raises:
        ValueError: naming ``origin``, when a masklet of the map is not in the table, the
            table's masklets are class-agnostic (label −1), or a label is out of range.
    """
    ids = torch.from_numpy(np.asarray(table.id, np.int64))
    labels = torch.from_numpy(np.asarray(table.label, np.int64))
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"{origin}: masklet label {int(labels.max())} is not a class id (0…{num_classes - 1})")
    seg = segments.long().cpu()
    present = torch.unique(seg[seg > 0])
    if not present.numel():
        return torch.full(seg.shape, IGNORE_INDEX, dtype=torch.uint8)
    at = torch.searchsorted(ids, present).clamp(max=max(ids.numel() - 1, 0))
    missing = present[(ids.numel() == 0) | (ids[at] != present)] if ids.numel() else present
    if missing.numel():
        raise ValueError(f"{origin}: masklets {missing[:10].tolist()} of the segment map are not in the score table")
    named = labels[at]
    if bool((named < 0).all()):
        raise ValueError(
            f"{origin}: the masklets carry no class (label −1: a class-agnostic source such as sam2_video or "
            "superpixels); I-SAM3 needs masklets of a text-prompted source (sam3_video)"
        )
    # masklets of a class-agnostic part (label −1) paint nothing
    lut = torch.full((int(present.max()) + 1,), IGNORE_INDEX, dtype=torch.int64)
    lut[present] = torch.where(named >= 0, named, torch.full_like(named, IGNORE_INDEX))
    lut[0] = IGNORE_INDEX
    return lut[seg].to(torch.uint8)


class NamedMasklets(PaintedRows):
    """Scores masklets painted with their prompt's class (I-SAM3) beside the base models.

    After a test epoch :attr:`report` has the rows ``name`` (uncovered pixels 255),
    ``name + "_base"`` (uncovered pixels from ``base_method``), and every prediction folder
    the datamodule serves (the base models), as :class:`~vssam2.classifier.MaskletClassifier`
    reports I-SAM2.

    Args:
        name: row name ("I-SAM3").
        base_method: the base model (a ``data.pred_roots`` name) that fills uncovered pixels
            for the ``<name>_base`` row; None = no base-filled row.
        metrics: the metric configuration.
    """

    def __init__(
        self, name: str = "I-SAM3", base_method: str | None = None, metrics: MetricConfig = MetricConfig()
    ) -> None:
        super().__init__(None, metrics)
        self.save_hyperparameters()
        self.row_name, self.base_method = name, base_method

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{method: (T, H, W) uint8}`` for one clip."""
        video = batch.get("video")
        if "segments" not in batch or batch.get("masklet_table") is None:
            raise KeyError(f"batch of video {video!r} has no cached masklets: set data.masklet_cache (sam3_video)")
        origin = str(batch.get("masklet_table_path", f"masklets of video {video!r}"))
        painted = label_map(batch["segments"], batch["masklet_table"], origin, self.metric_config.num_classes)
        return self.painted_rows(batch, painted)
