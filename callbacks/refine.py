"""Test-time refinement: majority vote of every model's predictions inside masklets (Eq. 1–2)."""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer

from vssam2.masklets.base import MaskletSource
from vssam2.replay import PredictionReplay
from vssam2.scoring import Refinement


class TestTimeRefinement(Callback):
    """Adds a refined row per method to the test of a :class:`~vssam2.replay.PredictionReplay`
    (or :class:`~vssam2.classifier.MaskletClassifier`).

    The refinement runs inside the module's scorer (:class:`vssam2.scoring.ChunkScorer`), so the
    refined rows use the module's metric configuration and land in the same
    :class:`~vssam2.scoring.ScoreReport` as the base rows (Table 1 / 2 shape: each method, then
    ``SAM2-<method>``), with the frames/s of masklets and vote in ``report.cost``. Masklets come
    from the batch (``batch["segments"]``, set by the datamodule's ``masklet_cache``) or, when
    ``source`` is given, are computed on the fly from ``batch["frames"]`` (and ``batch["gt"]``
    for the oracle), once per chunk for every method. Votes are counted per chunk: set
    ``data.clip_len`` to the masklet window so a chunk is one window.

    Args:
        source: masklet source to run on the fly; None = read ``batch["segments"]``.
        min_area: masklets with fewer pixels keep the base prediction.
        min_share: masklets whose winning class has a smaller vote share keep the base.
        name_format: row name of a refined method.
        write_dir: if set, refined predictions are written as PNGs of evaluation ids in
            ``<write_dir>/<row name>/<video>/<frame>.png`` (the result_submission layout).
    """

    def __init__(
        self,
        source: MaskletSource | None = None,
        min_area: int = 0,
        min_share: float = 0.0,
        name_format: str = "SAM2-{method}",
        write_dir: str | None = None,
    ) -> None:
        self.refinement = Refinement(source, min_area, min_share, name_format, write_dir)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Callbacks' setup runs before the module's, which builds its scorer with this.
        if not isinstance(pl_module, PredictionReplay):
            raise TypeError(
                f"TestTimeRefinement refines the rows of a PredictionReplay (or MaskletClassifier), "
                f"not of {type(pl_module).__name__}"
            )
        pl_module.refinement = self.refinement
