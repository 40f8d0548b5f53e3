"""Zero-shot masklet classification by a CLIP-family encoder (I-CLIP): no training at all.

Each masklet's vector is, by ``embedding``:

- ``"dense"`` (default): the masked-average pool (Eq. 3) of the encoder's dense, text-aligned
  patch features (:class:`vssam2.encoders.CLIPEncoder`), one tower pass per frame for all
  masklets;
- ``"crop"``: the tower's pooled image embedding (``get_image_features``) of a masked crop
  (OVSeg / Xu et al.'s mask-proposal classification): the masklet's bounding box in the frame
  of the clip where it is largest, squared and widened by a context margin, pixels outside
  the masklet set to CLIP's mean colour, prepared as CLIP's processor prepares an image; one
  tower pass per masklet (:func:`masklet_crop_boxes`, :func:`masked_crop`).

Its class is the class name whose prompt-ensembled text embedding
(:func:`vssam2.encoders.clip.clip_text_embeddings`) is most cosine-similar. The class is
painted on the masklet's pixels; uncovered pixels are 255 ("I-CLIP") or from a base model
("I-CLIP_base"), scored like every other row of Table 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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

EmbeddingMode = Literal["dense", "crop"]
#: How a masklet becomes one vector: dense patch features pooled, or a masked crop's embedding.
EMBEDDINGS: tuple[EmbeddingMode, ...] = ("dense", "crop")


@dataclass
class CropBoxes:
    """One square crop box per masklet of a clip, in the frame where the masklet is largest.

    Attributes:
        ids: (N,) int64 masklet ids, ascending (0, no masklet, excluded).
        frame: (N,) int64 frame (within the clip) of each masklet's largest area (the first such).
        top: (N,) int64 first row of the box (may be negative: the box leaves the frame).
        left: (N,) int64 first column of the box (may be negative).
        side: (N,) int64 side of the square box in frame pixels (>= 1).
        rows: (T, H, W) int64 row of each pixel in ``ids``, -1 where no masklet (for painting).
    """

    ids: torch.Tensor
    frame: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    side: torch.Tensor
    rows: torch.Tensor


def masklet_crop_boxes(segments: torch.Tensor, margin: float = 0.1) -> CropBoxes:
    """The masked-crop box of every masklet of a clip.

    For each masklet: the frame where it covers the most pixels (the earliest on ties), its
    bounding box there, then a square of side ``ceil(max(h, w) * (1 + 2 * margin))`` centred
    on that box (the box's longer side plus ``margin`` of it on each side; the shorter side
    is widened to the same length, so the crop is never stretched). The square may extend
    beyond the frame; :func:`masked_crop` fills that part like every pixel outside the masklet.

    Args:
        segments: (T, H, W) int segment map of the clip, 0 = no masklet.
        margin: context margin on each side, a fraction of the box's longer side (>= 0).

    Returns:
        The boxes, one per masklet present, ascending ids.
    """
    if segments.ndim != 3:
        raise ValueError(f"segments must be (T, H, W), got shape {tuple(segments.shape)}")
    if not margin >= 0:
        raise ValueError(f"crop margin must be >= 0, got {margin}")
    num_frames, height, width = segments.shape
    values, codes = torch.unique(segments, sorted=True, return_inverse=True)  # (K,), (T, H, W) int64
    offset = 1 if values.numel() and int(values[0]) == 0 else 0  # code 0 is "no masklet" when present
    count = values.numel()
    area = torch.stack([torch.bincount(codes[t].reshape(-1), minlength=count) for t in range(num_frames)])  # (T, K)
    best = area.argmax(dim=0)  # (K,) first frame of the largest area
    device = segments.device
    top = torch.full((count,), height, dtype=torch.int64, device=device)
    bottom = torch.full((count,), -1, dtype=torch.int64, device=device)
    left = torch.full((count,), width, dtype=torch.int64, device=device)
    right = torch.full((count,), -1, dtype=torch.int64, device=device)
    ys = torch.arange(height, device=device).view(height, 1).expand(height, width)  # (H, W)
    xs = torch.arange(width, device=device).view(1, width).expand(height, width)  # (H, W)
    for t in range(num_frames):
        mine = best[codes[t]] == t  # (H, W): pixels of masklets whose largest frame is t
        code, y, x = codes[t][mine], ys[mine], xs[mine]
        top.scatter_reduce_(0, code, y, "amin")
        bottom.scatter_reduce_(0, code, y, "amax")
        left.scatter_reduce_(0, code, x, "amin")
        right.scatter_reduce_(0, code, x, "amax")
    keep = slice(offset, None)
    top, bottom, left, right, best = top[keep], bottom[keep] + 1, left[keep], right[keep] + 1, best[keep]
    h, w = bottom - top, right - left  # (N,) the bounding box
    longer = torch.maximum(h, w)
    # round() first: 10 * 1.2 is 12.000000000000002 in floats, and its ceiling must be 12.
    sides = [max(1, math.ceil(round(v * (1.0 + 2.0 * margin), 6))) for v in longer.tolist()]
    side = torch.tensor(sides, dtype=torch.int64, device=device)
    rows = codes - offset  # (T, H, W): -1 where no masklet
    return CropBoxes(
        ids=values[keep].long(),
        frame=best,
        top=top - torch.div(side - h, 2, rounding_mode="floor"),
        left=left - torch.div(side - w, 2, rounding_mode="floor"),
        side=side,
        rows=rows,
    )


def masked_crop(
    frames: torch.Tensor,
    segments: torch.Tensor,
    masklet: int,
    frame: int,
    top: int,
    left: int,
    side: int,
    fill: torch.Tensor,
) -> torch.Tensor:
    """One masklet's masked crop, ``(3, side, side)`` uint8 RGB (a box of :func:`masklet_crop_boxes`).

    Pixels of the masklet keep the frame's colour; every other pixel of the square (other
    masklets, background, and the part beyond the frame) is ``fill``.

    Args:
        frames: (T, H, W, 3) uint8 RGB frames of the clip.
        segments: (T, H, W) int segment map of the clip.
        masklet: the masklet's id.
        frame: the frame to crop from.
        top: first row of the square (may be negative).
        left: first column of the square (may be negative).
        side: side of the square (>= 1).
        fill: (3,) uint8 colour (CLIP's mean colour, :attr:`CLIPEncoder.fill_colour`).
    """
    height, width = segments.shape[1:]
    y0, y1, x0, x1 = max(top, 0), min(top + side, height), max(left, 0), min(left + side, width)
    crop = fill.to(frames.device).view(3, 1, 1).expand(3, side, side).clone()  # (3, side, side) uint8
    inside = segments[frame, y0:y1, x0:x1].to(frames.device) == masklet  # (h, w) bool
    patch = frames[frame, y0:y1, x0:x1].permute(2, 0, 1)  # (3, h, w) uint8
    region = crop[:, y0 - top : y1 - top, x0 - left : x1 - left]  # (3, h, w) view
    region.copy_(torch.where(inside, patch, region))
    return crop


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
        pooling: feature upsampling of the pool (Eq. 3): "bilinear" or "nearest" (dense only).
        encoder_batch_size: frames per encoder call (dense).
        embedding: "dense" (pooled patch features, one tower pass per frame) or "crop" (a
            masked crop of each masklet through the tower's pooled head, one pass per masklet;
            see the module docstring). Dense is the default: its cost is a pass per frame
            whatever the masklets, its vector covers exactly the masklet's pixels, and it is
            the feature the trained head (I-CLIP-MLP) reads, so zero-shot and trained rows
            differ only by the head. Crops are cheaper only for few long-lived masklets
            against a larger dense input (docs/clip.md has the measured costs).
        crop_margin: context margin of a crop on each side, a fraction of the box's longer side.
        crop_batch_size: crops per tower call.
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
        embedding: EmbeddingMode = "dense",
        crop_margin: float = 0.1,
        crop_batch_size: int = 32,
        metrics: MetricConfig = MetricConfig(),
    ) -> None:
        super().__init__(None, metrics)
        self.save_hyperparameters(ignore=["encoder"])
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
        if not crop_margin >= 0:
            raise ValueError(f"crop_margin must be >= 0, got {crop_margin}")
        if crop_batch_size < 1:
            raise ValueError(f"crop_batch_size must be >= 1, got {crop_batch_size}")
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

    def crop_vectors(self, frames: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked-crop embeddings of a clip's masklets.

        Args:
            frames: (T, H, W, 3) uint8 RGB frames.
            segments: (T, H, W) int segment map, 0 = no masklet.

        Returns:
            ``(vectors, rows)``: (N, D) float32 embeddings of the masklets in ascending id order,
            and the (T, H, W) int64 row of each pixel (-1 where no masklet).
        """
        boxes = masklet_crop_boxes(segments, self.hparams.crop_margin)
        fill = self.encoder.fill_colour
        table = list(zip(*(v.tolist() for v in (boxes.ids, boxes.frame, boxes.top, boxes.left, boxes.side))))
        step = self.hparams.crop_batch_size
        vectors = []
        for start in range(0, len(table), step):
            crops = [masked_crop(frames, segments, *box, fill) for box in table[start : start + step]]
            vectors.append(self.encoder.image_embeddings(self.encoder.preprocess_crops(crops)))  # (n, D)
        if not vectors:
            return torch.zeros(0, self.encoder.out_channels, device=self.device), boxes.rows
        return torch.cat(vectors), boxes.rows

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{method: (T, H, W) uint8}`` for one clip."""
        video = batch.get("video")
        if "segments" not in batch:
            raise KeyError(f"batch of video {video!r} has no segment maps: set data.masklet_cache")
        if "frames" not in batch:
            raise KeyError(f"batch of video {video!r} has no frames: set data.load_frames true")
        if self.hparams.embedding == "crop":
            vectors, rows = self.crop_vectors(batch["frames"], batch["segments"])
            return self.painted_rows(batch, paint_rows(rows, self.classify(vectors)))
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
