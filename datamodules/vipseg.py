"""LightningDataModule for VIPSeg: the VSPW module with VIPSeg's layout and panoptic masks."""

from __future__ import annotations

from typing import ClassVar

from vssam2.datasets.layout import VIPSEG_LAYOUT, DatasetLayout

from .vspw import VSPWDataModule


class VIPSegDataModule(VSPWDataModule):
    """VIPSeg videos: ``<root>/images/<video>/<frame>.jpg`` and 16-bit panoptic
    ``<root>/panomasks/<video>/<frame>.png`` (value v → semantic raw id v if v < 125 else
    v // 100 → evaluation id), split lists ``<root>/<split>.txt``.

    Arguments, batches and error handling are those of :class:`VSPWDataModule`.
    """

    layout: ClassVar[DatasetLayout] = VIPSEG_LAYOUT
