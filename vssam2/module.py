"""LightningModules of vssam2.

:class:`PredictionReplay` turns prediction folders into a "model": its output for a batch is
the predictions stored for those frames, so any VSS model's results (CFFM, MRCFA, TV3S, …) are
scored by the same test loop, metrics and reports as vssam2's own models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import SumMetric

from vssam2.labels import IGNORE_INDEX, NUM_CLASSES
from vssam2.metrics import VSSMetrics


class PredictionReplay(LightningModule):
    """Scores the prediction folders a datamodule serves (``batch["preds"]``) with VSSMetrics.

    Every method is scored in the same pass over the data, so the ground truth is read once
    however many methods are compared. After a validation or test epoch, :attr:`results`
    holds ``{method: {"mIoU", "WIoU", "mBIoU", "mVC8", "mVC16", "per_class_iou"}}`` (fractions),
    and :attr:`counts` the number of videos and frames scored.

    Args:
        methods: names of the prediction sources to score (keys of ``batch["preds"]``); by
            default every source the datamodule lists in ``pred_names``.
        num_classes: number of classes.
        ignore_index: ignore id of the GT / "no prediction" id of predictions.
        boundary_width: boundary band half-width for mBIoU, in pixels.
        boundary_mode: "image" (Eq. 6) or "class".
        vc_lengths: window lengths n of the mVC_n metrics.
        vc_windows: "scripts" (T−n windows per video, as the reference scripts) or "paper" (T−n+1).
    """

    def __init__(
        self,
        methods: list[str] | None = None,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        boundary_width: int = 5,
        boundary_mode: str = "image",
        vc_lengths: Sequence[int] = (8, 16),
        vc_windows: str = "scripts",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.methods: list[str] = list(methods or [])
        self.metrics = nn.ModuleList()
        self.frames = SumMetric()
        self.videos = SumMetric()
        self.results: dict[str, dict[str, torch.Tensor]] = {}
        self.counts: dict[str, int] = {}

    def setup(self, stage: str) -> None:
        """Creates one metric set per method once the methods are known."""
        if not self.methods:
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            self.methods = list(getattr(datamodule, "pred_names", []) or [])
        if not self.methods:
            raise ValueError(
                "PredictionReplay has nothing to score: give the datamodule a prediction folder "
                "(--data.pred_root DIR or --data.pred_roots '{name: DIR}')"
            )
        if len(self.metrics) != len(self.methods):
            hp = self.hparams
            self.metrics = nn.ModuleList(
                VSSMetrics(hp.num_classes, hp.ignore_index, hp.boundary_width, hp.boundary_mode, hp.vc_lengths, hp.vc_windows)
                for _ in self.methods
            ).to(self.device)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Returns ``{method: (T, H, W) predicted ids}`` for one clip."""
        preds = batch.get("preds", {})
        missing = [m for m in self.methods if m not in preds]
        if missing:
            raise KeyError(f"batch of video {batch.get('video')!r} has no predictions for {missing}; has {list(preds)}")
        return {method: preds[method] for method in self.methods}

    def _score(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        preds = self(batch)
        target = batch["gt"]  # (T, H, W) uint8
        for method, metrics in zip(self.methods, self.metrics):
            metrics.update(preds[method], target, video=batch["video"], start=int(batch["start"]), last=bool(batch["last"]))
        self.frames.update(target.shape[0])
        self.videos.update(int(bool(batch["last"])))
        return preds

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._score(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._score(batch)

    def _finish_epoch(self, prefix: str) -> None:
        # compute() syncs each metric's states across ranks, so every rank gets the totals;
        # logging them with sync_dist averages identical values, which changes nothing.
        self.results = {method: metrics.compute() for method, metrics in zip(self.methods, self.metrics)}
        self.counts = {"videos": int(self.videos.compute().item()), "frames": int(self.frames.compute().item())}
        for method, values in self.results.items():
            for name, value in values.items():
                if name != "per_class_iou":
                    self.log(f"{prefix}/{method}/{name}", value.float() * 100, sync_dist=True)
        for metrics in self.metrics:
            metrics.reset()
        self.frames.reset()
        self.videos.reset()

    def on_validation_epoch_end(self) -> None:
        self._finish_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._finish_epoch("test")
