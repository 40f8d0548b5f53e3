"""The masklet classifier (I-SAM2, I-<encoder>): frozen encoder + masked-average pooling + MLP.

Training: each masklet's pooled vector (Eq. 3) is classified by an MLP head trained with
cross-entropy against the masklet's majority GT class (masklets whose pixels are all ignore
are skipped). Batches are either cached masklet vectors (``{"vectors", "target"}``, from the
feature cache) or clips with their segment maps (the encoder then runs online).

Testing: the predicted class of every masklet is painted onto its pixels; pixels outside
every masklet are 255 ("no prediction", I-SAM2) or, with ``base_method``, filled from that
base model's prediction (I-SAM2_base). The classifier's maps and the base model's are scored
by the benchmark core's metrics in the same pass, so one test run gives the rows of Table 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from vssam2.encoders import FrozenEncoder
from vssam2.features.extract import encode_frames, extract_clip_masklets, paint_rows
from vssam2.heads import MLPHead
from vssam2.metrics import SemanticIoU
from vssam2.metrics.config import MetricConfig
from vssam2.metrics.functional import confusion_from_histograms
from vssam2.pooling import POOLING_MODES, PoolingMode
from vssam2.refine import masklet_targets
from vssam2.replay import PaintedRows


class MaskletClassifier(PaintedRows):
    """Classifies masklets from frozen-encoder features (the study's I-SAM2 / I-CFFM).

    After a test epoch, :attr:`report` has one row per method: ``name`` (uncovered pixels
    255), ``name + "_base"`` (uncovered pixels from ``base_method``), and every prediction
    folder the datamodule serves (the base models), as :class:`PredictionReplay` reports them,
    and the classifier's pixel confusion matrix.

    Args:
        encoder: the frozen encoder (SAM2, timm, MiT). Needed for online training and for
            testing; training from a feature cache works without it (then give ``feature_dim``).
        feature_dim: dimension of the pooled vectors when there is no encoder.
        name: row name of the classifier in the results (e.g. "I-SAM2", "I-CFFM-B1").
        base_method: prediction folder (datamodule ``pred_roots`` name) that fills uncovered
            pixels for the ``<name>_base`` row; None = no base-filled row.
        hidden_dims: hidden widths of the MLP head.
        dropout: dropout of the MLP head.
        pooling: feature upsampling for pooling: "bilinear" or "nearest".
        per_frame: pool and classify each frame's part of a masklet separately; default one
            vector per masklet over a clip (the datamodule's ``clip_len`` frames).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up epochs before the cosine decay (over ``max_epochs``).
        label_smoothing: cross-entropy label smoothing.
        area_weighted: weight each masklet's loss by its pixel share in the batch (pixels,
            not masklets, make mIoU); default False: one masklet, one sample.
        encoder_batch_size: frames per encoder call.
        encoder_lr: AdamW learning rate of a trainable encoder's adapters
            (:class:`~vssam2.encoders.SAM2LoRAEncoder`); None = ``lr``. Ignored for frozen encoders.
        metrics: the metric configuration (classes, ignore id, boundary band, mVC windows) of
            every row, the head's class count included.
    """

    def __init__(
        self,
        encoder: FrozenEncoder | None = None,
        feature_dim: int | None = None,
        name: str = "I-SAM2",
        base_method: str | None = None,
        hidden_dims: Sequence[int] = (256,),
        dropout: float = 0.1,
        pooling: PoolingMode = "bilinear",
        per_frame: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: int = 0,
        label_smoothing: float = 0.0,
        area_weighted: bool = False,
        encoder_batch_size: int = 8,
        encoder_lr: float | None = None,
        metrics: MetricConfig = MetricConfig(),
    ) -> None:
        super().__init__(None, metrics)
        self.save_hyperparameters(ignore=["encoder"])
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        if encoder is None and feature_dim is None:
            raise ValueError("give an encoder, or feature_dim when training only from a feature cache")
        if encoder is not None and feature_dim is not None and feature_dim != encoder.out_channels:
            raise ValueError(f"feature_dim {feature_dim} != encoder.out_channels {encoder.out_channels}")
        self.encoder = encoder
        self.row_name, self.base_method = name, base_method
        in_dim = encoder.out_channels if encoder is not None else int(feature_dim)
        self.head = MLPHead(in_dim, metrics.num_classes, hidden_dims, dropout)
        self.train_loss = MeanMetric()
        self.train_acc = MeanMetric()
        self.val_loss = MeanMetric()
        self.val_acc = MeanMetric()
        self.val_iou = SemanticIoU(metrics.num_classes, metrics.ignore_index)

    # ------------------------------------------------------------------ masklet vectors

    def _require_encoder(self) -> FrozenEncoder:
        if self.encoder is None:
            raise RuntimeError(
                "this MaskletClassifier has no encoder: it can train from a feature cache, but online "
                "training and testing need `model.encoder` (class_path of a vssam2.encoders encoder)"
            )
        return self.encoder

    def clip_masklets(self, frames: torch.Tensor, segments: torch.Tensor, gt: torch.Tensor | None):
        """Encodes one clip and pools its masklets (see :func:`extract_clip_masklets`)."""
        features = encode_frames(self._require_encoder(), frames, self.hparams.encoder_batch_size, self.device)
        return extract_clip_masklets(
            features,
            segments,
            gt,
            self.hparams.pooling,
            self.hparams.per_frame,
            self.metric_config.num_classes,
            self.metric_config.ignore_index,
        )

    def _online_vectors(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if "segments" not in batch:
            raise KeyError(
                "training clips carry no segment maps: give the datamodule a masklet_cache (online training) "
                "or a feature_cache"
            )
        vectors, targets, areas = [], [], []
        for frames, segments, gt in zip(batch["frames"], batch["segments"], batch["gt"]):
            masklets = self.clip_masklets(frames, segments, gt)
            vectors.append(masklets.vectors)
            targets.append(
                masklet_targets(masklets.hist, self.metric_config.num_classes, self.metric_config.ignore_index)
            )
            areas.append(masklets.area)
        return torch.cat(vectors), torch.cat(targets).to(self.device), torch.cat(areas).to(self.device)

    def _loss(
        self, vectors: torch.Tensor, target: torch.Tensor, area: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = target != self.metric_config.ignore_index
        if not bool(keep.any()):
            # Every rank must run backward under DDP: a zero loss that touches the parameters.
            return sum(p.sum() * 0.0 for p in self.head.parameters()), torch.zeros((), device=self.device)
        logits = self.head(vectors[keep].float())
        target = target[keep]
        losses = F.cross_entropy(logits, target, reduction="none", label_smoothing=self.hparams.label_smoothing)
        if self.hparams.area_weighted:
            weight = area[keep].double()
            loss = (losses * (weight / weight.sum()).to(losses.dtype)).sum()
        else:
            loss = losses.mean()
        accuracy = (logits.argmax(dim=1) == target).float().mean()
        return loss, accuracy

    # ------------------------------------------------------------------------- training

    def _check_cached_vectors(self) -> None:
        if self.encoder is not None and self.encoder.trainable:
            raise ValueError(
                f"{type(self.encoder).__name__} trains its adapters, so cached vectors (data.feature_cache) are "
                "not its features: train online on clips (give data.masklet_cache and no data.feature_cache)"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if "vectors" in batch:  # feature cache
            self._check_cached_vectors()
            vectors, target, area = batch["vectors"], batch["target"], batch["area"]
        else:
            vectors, target, area = self._online_vectors(batch)
        loss, accuracy = self._loss(vectors, target, area)
        count = int((target != self.metric_config.ignore_index).sum())
        self.log("train/loss", loss, prog_bar=True, batch_size=max(count, 1))
        self.log("train/masklet_acc", accuracy * 100, batch_size=max(count, 1))
        return loss

    # ------------------------------------------------------------------- evaluation

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{method: (T, H, W) uint8}``: the painted masklets (+ base fill) and the base models."""
        if "segments" not in batch:
            raise KeyError(f"batch of video {batch.get('video')!r} has no segment maps: set data.masklet_cache")
        masklets = self.clip_masklets(batch["frames"], batch["segments"], None)
        classes = self.head(masklets.vectors).argmax(dim=1)  # (N,)
        return self.painted_rows(batch, paint_rows(masklets.rows, classes))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "vectors" not in batch:  # a clip stream: paint and score like testing
            self._score(batch)
            return
        # Cached validation: loss, masklet accuracy, and the exact pixel confusion matrix of
        # the painting (uncovered pixels = no prediction) from the masklets' GT histograms.
        self._check_cached_vectors()
        vectors, target = batch["vectors"].to(self.device), batch["target"].to(self.device)
        loss, accuracy = self._loss(vectors, target, torch.ones_like(target))
        keep = int((target != self.metric_config.ignore_index).sum())
        if keep:
            self.val_loss.update(loss, keep)
            self.val_acc.update(accuracy, keep)
        num = vectors.shape[0]
        hist = torch.zeros(num, 256, dtype=torch.int64, device=self.device)
        hist.index_put_(
            (batch["hist_row"].to(self.device), batch["hist_label"].to(self.device)),
            batch["hist_count"].to(self.device),
            accumulate=True,
        )
        classes = self.head(vectors).argmax(dim=1) if num else target
        self.val_iou.update(
            confmat=confusion_from_histograms(
                classes,
                hist,
                batch["uncovered"].to(self.device),
                self.metric_config.num_classes,
                self.metric_config.ignore_index,
            )
        )

    def on_validation_epoch_end(self) -> None:
        if self.val_iou.update_count:
            scores = self.val_iou.compute()
            self.log("val/loss", self.val_loss.compute())
            self.log("val/masklet_acc", self.val_acc.compute() * 100)
            self.log("val/mIoU", scores["mIoU"].float() * 100, prog_bar=True)
            self.log("val/WIoU", scores["WIoU"].float() * 100)
            for metric in (self.val_loss, self.val_acc, self.val_iou):
                metric.reset()
            self.report = None
            return
        super().on_validation_epoch_end()
        name = self.row_name
        if name in self.report.rows:  # the same monitor key in both validation modes
            self.log("val/mIoU", self.report.rows[name]["mIoU"].float() * 100, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        """Scores the test epoch; the report also carries the classifier's pixel confusion
        matrix, which the results writer plots."""
        iou = self.scorer.base[self.row_name].iou  # the classifier's own row
        with iou.sync_context():  # all ranks' pixels (a no-op on one process)
            confusion = iou.confmat.detach().cpu().clone()  # (C, C + 1) int64
        super().on_test_epoch_end()
        self.report.confusion[self.row_name] = confusion

    # ---------------------------------------------------------------- optimisation

    def trainable_encoder_parameters(self) -> list[torch.nn.Parameter]:
        """The encoder's trainable parameters (LoRA adapters); empty for a frozen encoder."""
        if self.encoder is None:
            return []
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW on the head (and a trainable encoder's adapters, at ``encoder_lr``); linear
        warm-up then cosine decay per epoch over ``max_epochs``."""
        groups: list[dict[str, Any]] = [{"params": list(self.head.parameters()), "lr": self.hparams.lr}]
        adapters = self.trainable_encoder_parameters()
        if adapters:
            encoder_lr = self.hparams.encoder_lr if self.hparams.encoder_lr is not None else self.hparams.lr
            groups.append({"params": adapters, "lr": encoder_lr})
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        max_epochs = self.trainer.max_epochs if self._trainer is not None and self.trainer.max_epochs else 1
        max_epochs = max(int(max_epochs), 1)
        warmup = int(self.hparams.warmup_epochs)

        def factor(epoch: int) -> float:
            if epoch < warmup:
                return (epoch + 1) / (warmup + 1)
            progress = (epoch - warmup) / max(max_epochs - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keeps the frozen encoder's weights out of checkpoints (they are the user's file):
        only the head and a trainable encoder's adapters are saved, with the identity of the
        encoder they were trained on (for adapters, that identity includes the base encoder's)."""
        trained = (
            {f"encoder.{name}" for name, p in self.encoder.named_parameters() if p.requires_grad}
            if (self.encoder is not None)
            else set()
        )
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder.") or k in trained
        }
        checkpoint["vssam2_encoder"] = self.encoder.describe() if self.encoder is not None else None
        checkpoint["vssam2_feature_dim"] = self.head.in_dim

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses a checkpoint of another encoder; puts the current encoder's weights back."""
        trained_on = checkpoint.get("vssam2_encoder")
        dim = checkpoint.get("vssam2_feature_dim")
        if dim is not None and dim != self.head.in_dim:
            raise ValueError(
                f"checkpoint head takes {dim}-d vectors, this model's encoder gives {self.head.in_dim}-d: "
                "it was trained with another encoder"
            )
        if trained_on is not None and self.encoder is not None and trained_on != self.encoder.describe():
            base, mine = trained_on.get("base"), self.encoder.describe().get("base")
            if base is not None and mine is not None and base != mine:
                raise ValueError(
                    "checkpoint's LoRA adapters were trained on another base SAM2 encoder:\n"
                    f"  checkpoint base: {base}\n  this model's base: {mine}"
                )
            raise ValueError(
                "checkpoint was trained on another encoder configuration:\n"
                f"  checkpoint: {trained_on}\n  this model: {self.encoder.describe()}"
            )
        if self.encoder is not None:
            for key, value in self.encoder.state_dict().items():
                checkpoint["state_dict"].setdefault(f"encoder.{key}", value)
