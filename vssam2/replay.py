"""PredictionReplay: prediction folders scored as a "model" by Lightning's test loop.

Its output for a chunk is the predictions stored for those frames, so any VSS model's results
(CFFM, MRCFA, TV3S, DVIS, …) are scored by the same loop, metrics and reports as vssam2's own
models, through the one refine-and-score path (:class:`vssam2.scoring.ChunkScorer`).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule

from vssam2.labels import IGNORE_INDEX
from vssam2.metrics.config import MetricConfig
from vssam2.scoring import ChunkScorer, Refinement, ScoredChunk, ScoreReport


class PredictionReplay(LightningModule):
    """Scores the prediction folders a datamodule serves (``batch["preds"]``).

    Every method is scored in the same pass over the data, so the ground truth is read once
    however many methods are compared. With a :attr:`refinement` (set by
    :class:`callbacks.TestTimeRefinement`), testing also scores a refined row per method.
    After a validation or test epoch, :attr:`report` holds the :class:`ScoreReport`.

    Args:
        methods: names of the prediction sources to score (keys of ``batch["preds"]``); by
            default every source the datamodule lists in ``pred_names``.
        metrics: the metric configuration (classes, ignore id, boundary band, mVC windows).
    """

    def __init__(self, methods: list[str] | None = None, metrics: MetricConfig = MetricConfig()) -> None:
        super().__init__()
        # Lightning collects the init arguments of the subclass frames too; their encoder is a
        # module (its weights are not hyperparameters; subclasses save their own without it).
        self.save_hyperparameters(ignore=["encoder"])
        self.methods: list[str] = list(methods or [])
        self.metric_config = metrics
        self.refinement: Refinement | None = None
        self.scorer: ChunkScorer | None = None
        self.report: ScoreReport | None = None

    def setup(self, stage: str) -> None:
        """Builds the scorer once the methods are known (refined rows only when testing)."""
        if not self.methods:
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            self.methods = list(getattr(datamodule, "pred_names", []) or [])
        if not self.methods:
            raise ValueError(
                "PredictionReplay has nothing to score: give the datamodule a prediction folder "
                "(--data.pred_root DIR or --data.pred_roots '{name: DIR}')"
            )
        refinement = self.refinement if stage == "test" else None
        self.scorer = ChunkScorer(self.methods, self.metric_config, refinement).to(self.device)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Returns ``{method: (T, H, W) predicted ids}`` for one clip."""
        preds = batch.get("preds", {})
        missing = [m for m in self.methods if m not in preds]
        if missing:
            raise KeyError(f"batch of video {batch.get('video')!r} has no predictions for {missing}; has {list(preds)}")
        return {method: preds[method] for method in self.methods}

    def _score(self, batch: dict[str, Any]) -> ScoredChunk:
        return self.scorer.update(batch, self(batch))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> ScoredChunk:
        return self._score(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> ScoredChunk:
        return self._score(batch)

    def _finish_epoch(self, prefix: str) -> None:
        # compute() syncs each metric's states across ranks, so every rank gets the totals;
        # logging them with sync_dist averages identical values, which changes nothing.
        self.report = self.scorer.compute()
        for row, values in self.report.rows.items():
            for name, value in values.items():
                if name != "per_class_iou":
                    self.log(f"{prefix}/{row}/{name}", value.float() * 100, sync_dist=True)
        self.scorer.reset()

    def on_validation_epoch_end(self) -> None:
        self._finish_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._finish_epoch("test")


class PaintedRows(PredictionReplay):
    """A model whose prediction paints masklets (I-SAM2, I-SAM3, I-CLIP), scored beside the base models.

    Its rows are ``name`` (pixels it does not paint are 255), ``name + "_base"`` (those pixels
    from ``base_method``, when given) and every prediction folder the datamodule serves.
    Subclasses set :attr:`row_name` and :attr:`base_method` and call :meth:`painted_rows`.
    """

    row_name: str
    base_method: str | None

    def setup(self, stage: str) -> None:
        """Rows: the painted prediction, its base-filled variant, the base models."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        preds = list(getattr(datamodule, "pred_names", []) or [])
        base = self.base_method
        if base is not None and base not in preds:
            raise ValueError(
                f"base_method {base!r} is not a prediction folder of the datamodule (it serves {preds}); "
                f"add it with --data.pred_roots '{{{base}: DIR}}'"
            )
        self.methods = [self.row_name] + ([f"{self.row_name}_base"] if base is not None else []) + preds
        super().setup(stage)

    def painted_rows(self, batch: dict[str, Any], painted: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{method: (T, H, W)}`` of one clip from its (T, H, W) uint8 painted map (255 = not painted)."""
        outputs = {self.row_name: painted}
        preds = batch.get("preds", {})
        if self.base_method is not None:
            fill = preds[self.base_method].to(device=painted.device, dtype=torch.uint8)
            outputs[f"{self.row_name}_base"] = torch.where(painted != IGNORE_INDEX, painted, fill)
        for method in self.methods:
            if method not in outputs:
                if method not in preds:
                    raise KeyError(f"batch of video {batch.get('video')!r} has no predictions for {method!r}")
                outputs[method] = preds[method]
        return {method: outputs[method].to(self.device) for method in self.methods}
