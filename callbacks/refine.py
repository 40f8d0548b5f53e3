"""Test-time refinement: every model's predictions refined inside masklets by one or more rules."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import Callback, LightningModule, Trainer

from vssam2.fusion.rules import MajorityVote, RefinementRule
from vssam2.masklets.base import MaskletSource
from vssam2.replay import PredictionReplay
from vssam2.scoring import Refinement


class TestTimeRefinement(Callback):
    """Adds a refined row per method to the test of a :class:`~vssam2.replay.PredictionReplay`
    (or :class:`~vssam2.classifier.MaskletClassifier`).

    The refinement runs inside the module's scorer (:class:`vssam2.scoring.ChunkScorer`), so the
    refined rows use the module's metric configuration and land in the same
    :class:`~vssam2.scoring.ScoreReport` as the base rows (Table 1 / 2 shape: each method, then
    ``SAM2-<method>`` for the majority vote and ``SAM2-<method> (<rule>)`` for every other
    rule, each with its per-class delta against the base), with the frames/s of masklets and
    rules in ``report.cost``. Masklets come from the batch (``batch["segments"]`` and
    ``batch["masklet_table"]``, set by the datamodule's ``masklet_cache``) or, when ``source``
    is given, are computed on the fly from ``batch["frames"]`` (and ``batch["gt"]``
    for the oracle), once per chunk for every method. Votes are counted per chunk: set
    ``data.clip_len`` to the masklet window so a chunk is one window.

    Args:
        source: masklet source to run on the fly; None = read ``batch["segments"]``.
        rules: refinement rules (:mod:`vssam2.fusion.rules`: ``MajorityVote``, ``QualityGate``,
            ``ProbabilityVote``, ``LearnedFusion``), one refined row each; default the
            majority vote alone (the paper's rule).
        name_format: row name of a method refined by the majority vote.
        write_dir: if set, refined predictions are written as PNGs of evaluation ids in
            ``<write_dir>/<row name>/<video>/<frame>.png`` (the result_submission layout).
    """

    def __init__(
        self,
        source: MaskletSource | None = None,
        rules: Sequence[RefinementRule] | None = None,
        name_format: str = "SAM2-{method}",
        write_dir: str | None = None,
    ) -> None:
        self.refinement = Refinement(source, list(rules or [MajorityVote()]), name_format, write_dir)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Callbacks' setup runs before the module's, which builds its scorer with this.
        if not isinstance(pl_module, PredictionReplay):
            raise TypeError(
                f"TestTimeRefinement refines the rows of a PredictionReplay (or MaskletClassifier), "
                f"not of {type(pl_module).__name__}"
            )
        pl_module.refinement = self.refinement
