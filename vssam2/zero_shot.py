"""Zero-shot masklet classification by a CLIP-family encoder (I-CLIP): no training at all.

Each masklet's vector is the masked-average pool (Eq. 3) of the encoder's dense, text-aligned
patch features (:class:`vssam2.encoders.CLIPEncoder`); its class is the class name whose
prompt-ensembled text embedding (:func:`vssam2.encoders.clip.clip_text_embeddings`) is most
cosine-similar. The class is painted on the masklet's pixels; uncovered pixels are 255
("I-CLIP") or from a base model ("I-CLIP_base"), scored like every other row of Table 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from vssam2.encoders.clip import CLIPEncoder, clip_text_embeddings
from vssam2.features.extract import encode_frames, extract_clip_masklets, paint_rows
from vssam2.labels import vspw_classes
from vssam2.metrics.config import MetricConfig
from vssam2.pooling import POOLING_MODES, PoolingMode
from vssam2.replay import PaintedRows

#: CLIP's own ImageNet-style prompt templates, a few of its 80 (prompt ensembling).
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a photo of the {}.", "a blurry photo of a {}.", "{}")


def class_phrases(num_classes: int) -> list[str]:
    """The VSPW class names as phrases: ``flower_pot_or_vase`` → ``flower pot or vase``."""
    names = vspw_classes().names
    if len(names) != num_classes:
        raise ValueError(f"the VSPW class table has {len(names)} classes, the metrics {num_classes}: give class_names")
    return [name.replace("_", " ").lower() for name in names]


class ZeroShotCLIP(PaintedRows):
    """Scores CLIP-named masklets (I-CLIP, I-CLIP_base) beside the base models.

    Args:
        encoder: the CLIP / SigLIP encoder (its folder also gives the text tower).
        name: row name ("I-CLIP").
        base_method: base model (``data.pred_roots`` name) filling uncovered pixels for the
            ``<name>_base`` row; None = no such row.
        class_names: one phrase per class (default: the VSPW names as phrases).
        templates: prompt templates (one ``{}`` each), averaged per class.
        pooling: feature upsampling of the pool (Eq. 3): "bilinear" or "nearest".
        encoder_batch_size: frames per encoder call.
        metrics: the metric configuration.
    """

    def __init__(
        self,
        encoder: CLIPEncoder,
        name: str = "I-CLIP",
        base_method: str | None = None,
        class_names: Sequence[str] | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        pooling: PoolingMode = "bilinear",
        encoder_batch_size: int = 8,
        metrics: MetricConfig = MetricConfig(),
    ) -> None:
        super().__init__(None, metrics)
        self.save_hyperparameters(ignore=["encoder"])
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        names = list(class_names) if class_names is not None else class_phrases(metrics.num_classes)
        if len(names) != metrics.num_classes:
            raise ValueError(f"{len(names)} class names for {metrics.num_classes} classes")
        self.encoder = encoder
        self.row_name, self.base_method = name, base_method
        text = clip_text_embeddings(encoder.checkpoint, names, list(templates))  # (C, D) unit norm
        if text.shape[1] != encoder.out_channels:
            raise ValueError(
                f"text embeddings have {text.shape[1]} dimensions, the image features {encoder.out_channels}: "
                "use projected=True (CLIP's visual_projection)"
            )
        self.register_buffer("text", text, persistent=False)

    def classify(self, vectors: torch.Tensor) -> torch.Tensor:
        """(N,) class of each (N, D) masklet vector: the most cosine-similar text embedding."""
        return (F.normalize(vectors.float(), dim=-1) @ self.text.T).argmax(dim=1)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{method: (T, H, W) uint8}`` for one clip."""
        video = batch.get("video")
        if "segments" not in batch:
            raise KeyError(f"batch of video {video!r} has no segment maps: set data.masklet_cache")
        if "frames" not in batch:
            raise KeyError(f"batch of video {video!r} has no frames: set data.load_frames true")
        features = encode_frames(self.encoder, batch["frames"], self.hparams.encoder_batch_size, self.device)
        masklets = extract_clip_masklets(
            features,
            batch["segments"],
            None,
            self.hparams.pooling,
            False,
            self.metric_config.num_classes,
            self.metric_config.ignore_index,
        )
        classes = self.classify(masklets.vectors)
        return self.painted_rows(batch, paint_rows(masklets.rows, classes))
