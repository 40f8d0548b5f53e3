"""I-SAM2 in one pass: the feature cache written while a SAM2 source computes the masklets.

Training I-SAM2 needs SAM2 masklets of every training frame and SAM2 image-encoder features
of the same frames pooled over them (Eq. 3). The study's pipeline (Fig. 2) uses one encoder
for both; run as two commands, ``python -m vssam2.masklets`` and then
``python -m vssam2.features``, the image encoder runs twice over every frame. With
``compute_cache(..., features=OnePassFeatures(...))`` (``--features`` of
``python -m vssam2.masklets``) the masklet pass hands every frame's encoder output to a
:class:`OnePassFeatureWriter` (one of the source's ``frame_listeners``), which keeps that
output until the frame's segment map is known, pools it and drops it.

What is written is the feature cache that ``python -m vssam2.features`` would write with the
**equivalent SAM2Encoder** — ``SAM2Encoder(config, checkpoint, level, image_size, overrides,
seed=0, autocast)`` with the source's config, checkpoint, image size and overrides — over the
masklet cache of this pass: the same folder (key), the same ``.npz`` per video, so
``train.py`` reads it unchanged and a later ``python -m vssam2.features`` finds those videos
done. To make that claim checkable rather than assumed, :meth:`OnePassFeatures.bind` builds
the equivalent encoder once, takes its :meth:`~vssam2.encoders.SAM2Encoder.describe` for the
key and refuses to start unless its image-encoder weights equal the source model's.

Why the features are the same:

- **Input.** The source's model input is :func:`vssam2.masklets.stock_proposer.preprocess_frame`
  (/255, bilinear antialiased resize to ``image_size``², ImageNet mean / std), the same
  operations in the same order as ``SAM2Encoder.preprocess``.
- **Levels.** ``SAM2Encoder`` returns ``image_encoder(x)["backbone_fpn"][level]``; the source
  has ``forward_image(x)``, which is that dict except that, when the model uses
  high-resolution features in its decoder (``use_high_res_features_in_sam``, every official
  config), levels 0 and 1 are replaced by the decoder's ``conv_s0`` / ``conv_s1``
  projections (32 and 64 channels). The raw levels are not kept and cannot be recomputed
  from what is kept, so those levels are refused here (compute them with
  ``python -m vssam2.features``); the last level (``-1``, stride 16, SAM2's
  ``vision_features``, the default) and every level of a model without high-resolution
  features are served.
- **Precision.** A source with ``bf16: true`` encodes under bf16 autocast on its device;
  ``SAM2Encoder(autocast=True)`` autocasts to bf16 on CUDA and never on CPU. The feature
  cache key records the encoder's ``autocast`` flag (its device is not in the key), so:
  a CUDA source with ``bf16`` gives the key of ``autocast: true``; a source without ``bf16``
  gives exact float32 features, the key of ``autocast: false`` on CUDA and of ``autocast:
  true`` (the encoder's default; on CPU it changes nothing) or ``false`` on CPU; a CPU source
  with ``bf16`` has no equivalent encoder and is refused. ``OnePassFeatures.autocast``
  picks the flag; a value that contradicts the source's precision is refused.
- **Arithmetic.** Rows are made by :class:`vssam2.features.compute.VideoRows`, the code
  ``compute_feature_cache`` uses. The encoder sees one frame per call here and
  ``encoder_batch_size`` frames there; on CPU the float32 features agree bit for bit with
  ``encoder_batch_size: 1`` (tested), with larger batches to float rounding.

Chunks: the masklet pass is fed ``data.clip_len`` frames per chunk (part of the masklet
cache key); the feature cache pools rows over chunks of its own ``clip_len`` (part of its
key; the study pools over the masklet window, 32). They may differ: features of the listened
frames are held until the frames of the next feature chunk all have their segment maps, then
pooled and dropped, so memory holds at most ``clip_len + data.clip_len - 1`` frames of
features.

Resuming: a video's feature file is written (atomically) right after its masklet video is
finished. A video with both done is skipped; a video whose masklets are done but whose
feature file is missing (a run killed between the two writes, or a pass that had no
``--features``) gets its features from its cached masklets, the encoder run once more on its
frames and nothing recomputed or rewritten in the masklet cache; a video whose masklets are
not done is computed afresh, and its feature file (re)written from the new masklets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vssam2.datasets.streaming import chunk_bounds
from vssam2.features.cache import FeatureCache, feature_cache_config
from vssam2.features.compute import VideoRows
from vssam2.pooling import POOLING_MODES, PoolingMode


@dataclass(frozen=True)
class OnePassFeatures:
    """The feature cache to write in the masklet pass (``--features`` of ``python -m vssam2.masklets``).

    Attributes:
        level: FPN level of SAM2's image encoder, as ``SAM2Encoder(level=...)`` (-1 = the
            last, stride 16). Levels that sam2's ``forward_image`` overwrites (0 and 1 when
            the model uses high-resolution decoder features) are refused.
        pooling: feature upsampling of the pooling ("bilinear" or "nearest").
        per_frame: one vector per (frame, masklet) instead of per masklet of a chunk.
        feature_root: parent folder of feature cache folders (as ``python -m vssam2.features``).
        clip_len: frames per pooled chunk, the feature cache's ``clip_len`` (None: the
            masklet pass's ``data.clip_len``).
        autocast: the equivalent ``SAM2Encoder``'s ``autocast`` flag (None: the one that
            matches the source: ``bf16`` on CUDA, True on CPU). See the module docstring.
    """

    level: int = -1
    pooling: PoolingMode = "bilinear"
    per_frame: bool = False
    feature_root: str = "cache/features"
    clip_len: int | None = None
    autocast: bool | None = None

    def bind(self, source: Any, data: Any, masklet_cache: Any, split: str) -> OnePassFeatureWriter:
        """The writer of this feature cache for one masklet pass.

        Args:
            source: the masklet source; must be a :class:`vssam2.masklets.sam2_video.SAM2VideoSource`
                (or :class:`~vssam2.masklets.sam2_video.SAM2FrameSource`).
            data: the masklet pass's dataset (layout, ``clip_len``, ``num_classes``).
            masklet_cache: the :class:`vssam2.masklets.cache.MaskletCache` the pass writes.
            split: the split the pass computes (the feature cache's ``<split>/`` folder).

        Raises:
            TypeError: ``source`` is not a SAM2 source.
            ValueError: a level the pass cannot serve, a precision no ``SAM2Encoder`` has, an
                ``autocast`` that contradicts the source, a bad ``pooling`` / ``clip_len``, or
                a source model whose image encoder is not the equivalent encoder's.
        """
        from vssam2.masklets.sam2_video import SAM2VideoSource

        if not isinstance(source, SAM2VideoSource):
            raise TypeError(
                f"features in the masklet pass need a SAM2 source (SAM2VideoSource or SAM2FrameSource), got "
                f"{type(source).__name__}: the features are SAM2's image-encoder output of the masklet pass. "
                "Compute the masklets without features, then the feature cache with `python -m vssam2.features`"
            )
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"features.pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        clip_len = int(data.clip_len if self.clip_len is None else self.clip_len)
        if clip_len < 1:
            raise ValueError(f"features.clip_len must be >= 1, got {clip_len}")
        level, autocast = _check_servable(source, self.level, self.autocast)
        description, channels = _equivalent_encoder(source, level, autocast)
        config = feature_cache_config(
            _Described(description),
            _FeatureData(masklet_cache, data.layout, clip_len, int(data.num_classes)),
            self.pooling,
            self.per_frame,
        )
        cache = FeatureCache.create(self.feature_root, config)
        return OnePassFeatureWriter(
            source, cache, split, level, self.pooling, self.per_frame, clip_len, int(data.num_classes), channels
        )


@dataclass
class _Described:
    """An encoder as :func:`feature_cache_config` sees it: its ``describe()``."""

    description: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return self.description


@dataclass
class _FeatureData:
    """A dataset as :func:`feature_cache_config` sees it (the feature cache's data side)."""

    masklet_cache: Any
    layout: Any
    clip_len: int
    num_classes: int


def _check_servable(source: Any, level: int, autocast: bool | None) -> tuple[int, bool]:
    """The normalised level and the equivalent encoder's autocast flag, or a clear refusal."""
    model = source.predictor
    image_encoder = model.image_encoder
    num_levels = len(image_encoder.neck.convs) - int(image_encoder.scalp)
    if not -num_levels <= level < num_levels:
        raise ValueError(
            f"features.level {level} out of range for SAM2 config {source.sam2_config!r}: it has {num_levels} FPN "
            f"levels (0..{num_levels - 1}, or -1 for the last)"
        )
    index = level % num_levels
    if model.use_high_res_features_in_sam and index in (0, 1):
        raise ValueError(
            f"features.level {level} (FPN level {index}) cannot be pooled in the masklet pass: sam2's forward_image "
            f"replaces backbone_fpn[{index}] by the mask decoder's conv_s{index} projection "
            "(use_high_res_features_in_sam), and the raw FPN output that SAM2Encoder(level="
            f"{index}) returns is not kept. Use level -1 ({num_levels - 1}, stride 16, SAM2's vision_features), or "
            "compute this level in a second pass with `python -m vssam2.features`"
        )
    device_type = torch.device(source.device).type
    if source.bf16 and device_type != "cuda":
        raise ValueError(
            f"a SAM2 source with bf16 on {source.device!r} encodes under {device_type} bf16 autocast, and no "
            "SAM2Encoder computes those features (it autocasts on CUDA only), so no feature cache key describes "
            "them: set the source's bf16 to false for features in the masklet pass, or compute them with "
            "`python -m vssam2.features`"
        )
    if autocast is None:
        autocast = bool(source.bf16) if device_type == "cuda" else True
    encoder_bf16 = bool(autocast) and device_type == "cuda"
    if encoder_bf16 != bool(source.bf16):
        raise ValueError(
            f"features.autocast {autocast} on {source.device!r} means {'bf16' if encoder_bf16 else 'float32'} "
            f"SAM2Encoder features, but the source (bf16={source.bf16}) encodes in "
            f"{'bf16' if source.bf16 else 'float32'}: set features.autocast to {bool(source.bf16)} (or leave it null)"
        )
    return index, bool(autocast)


def _equivalent_encoder(source: Any, level: int, autocast: bool) -> tuple[dict[str, Any], int]:
    """``describe()`` and channels of the SAM2Encoder equal to the source's image encoder.

    Built once on CPU and dropped: its description is the feature cache's encoder key, and its
    weights must equal the source model's (otherwise the key would name other features).
    """
    from vssam2.encoders.sam2 import SAM2Encoder

    encoder = SAM2Encoder(
        config=source.sam2_config,
        checkpoint=source.checkpoint,
        level=level,
        image_size=source.image_size,
        overrides=source.overrides,
        seed=0,  # SAM2VideoSource seeds random weights with 0
        autocast=autocast,
    )
    model = source.predictor
    if int(model.image_size) != encoder.image_size:
        raise ValueError(
            f"the source's model takes {model.image_size}² input but SAM2Encoder({source.sam2_config!r}, "
            f"image_size={source.image_size}) takes {encoder.image_size}²"
        )
    theirs = encoder.image_encoder.state_dict()
    ours = model.image_encoder.state_dict()
    differ = [
        name
        for name, value in theirs.items()
        if name not in ours or ours[name].shape != value.shape or not torch.equal(ours[name].detach().cpu(), value)
    ]
    differ += [name for name in ours if name not in theirs]
    if differ:
        raise ValueError(
            f"the SAM2 source's image encoder differs from SAM2Encoder({source.sam2_config!r}, "
            f"checkpoint={source.checkpoint!r}) in {len(differ)} tensors (e.g. {differ[:3]}): its features would be "
            "cached under another encoder's key; features in the masklet pass need the source's model unmodified"
        )
    description, channels = encoder.describe(), int(encoder.out_channels)
    del encoder, theirs
    return description, channels


class OnePassFeatureWriter:
    """Pools the features a SAM2 source encodes over the segment maps it returns, video by video.

    Protocol (driven by :func:`vssam2.masklets.compute.compute_cache`)::

        writer.attach()                                 # listens to the source's encoder
        writer.begin_video(name, num_frames)
        segments = source.add_chunk(frames, start, gt)  # the source calls writer.listen per frame
        writer.add_chunk(start, segments, gt)           # pools every complete feature chunk
        rows = writer.finish_video()                    # writes <split>/<video>.npz
        writer.detach()

    For a video whose masklets are already cached, :meth:`encode` runs the source's encoder on
    its frames in place of the masklet computation, then :meth:`add_chunk` takes the cached maps.

    Args:
        source: the SAM2 source.
        cache: the feature cache folder.
        split: split being computed.
        level: FPN level (normalised, servable).
        pooling: feature upsampling of the pooling.
        per_frame: one row per (frame, masklet).
        clip_len: frames per pooled chunk.
        num_classes: evaluation classes.
        channels: feature channels.
    """

    def __init__(
        self,
        source: Any,
        cache: FeatureCache,
        split: str,
        level: int,
        pooling: PoolingMode,
        per_frame: bool,
        clip_len: int,
        num_classes: int,
        channels: int,
    ) -> None:
        self.source = source
        self.cache = cache
        self.split = split
        self.level = int(level)
        self.pooling: PoolingMode = pooling
        self.per_frame = bool(per_frame)
        self.clip_len = int(clip_len)
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.rows_written = 0
        self._video: str | None = None
        self._reset()

    @property
    def directory(self) -> Path:
        """The feature cache folder."""
        return self.cache.directory

    def is_done(self, video: str) -> bool:
        """True when the video's feature file exists."""
        return self.cache.is_done(self.split, video)

    def discard(self, video: str) -> None:
        """Deletes the video's feature file, if any (its masklets are about to be recomputed)."""
        self.cache.video_path(self.split, video).unlink(missing_ok=True)

    # ------------------------------------------------------------------ listening

    def attach(self) -> None:
        """Registers :meth:`listen` with the source."""
        if self.listen not in self.source.frame_listeners:
            self.source.frame_listeners.append(self.listen)

    def detach(self) -> None:
        """Unregisters :meth:`listen` (the source is left as it was)."""
        while self.listen in self.source.frame_listeners:
            self.source.frame_listeners.remove(self.listen)

    def listen(self, t: int, frame: torch.Tensor, encoded: Any) -> None:
        """Keeps frame ``t``'s level (a ``frame_listeners`` callable; ``encoded``: an ``EncodedFrame``)."""
        if self._video is None:
            raise RuntimeError(f"feature writer: frame {t} was encoded outside a video (call begin_video first)")
        if t != self._listened:
            raise RuntimeError(
                f"feature writer, video {self._video!r}: frame {t} encoded where frame {self._listened} was expected "
                "(frames must be encoded once each, in order)"
            )
        level = encoded.backbone_out["backbone_fpn"][self.level]  # (1, C, h, w), bf16 under autocast
        # A copy: the encoder output is shared with the tracker, which must not be able to change it.
        self._features.append(level.detach().clone())
        self._listened += 1

    def encode(self, frames: torch.Tensor, start: int) -> None:
        """Runs the source's encoder on (T, H, W, 3) uint8 frames ``start ...`` (cached-masklet videos)."""
        for i in range(frames.shape[0]):
            self.listen(start + i, frames[i], self.source.encode(frames[i]))

    # ------------------------------------------------------------------ per video

    def _reset(self) -> None:
        self._num_frames = 0
        self._listened = 0  # next frame index to be encoded
        self._features: list[torch.Tensor] = []  # (1, C, h, w) per frame from self._pooled on
        self._segments: list[torch.Tensor] = []  # (H, W) per frame from self._pooled on
        self._gt: list[torch.Tensor] = []
        self._segmented = 0  # next frame index whose segment map is expected
        self._pooled = 0  # first frame not pooled yet
        self._bounds: list[tuple[int, int]] = []
        self._rows: VideoRows | None = None

    def begin_video(self, video: str, num_frames: int) -> None:
        """Starts a video of ``num_frames`` frames (whatever the previous one left is dropped)."""
        self._reset()
        self._video = video
        self._num_frames = int(num_frames)
        self._bounds = chunk_bounds(self._num_frames, self.clip_len)
        self._rows = VideoRows(self.num_classes, self.channels, self.pooling, self.per_frame)

    def add_chunk(self, start: int, segments: torch.Tensor, gt: torch.Tensor) -> None:
        """Takes the segment maps (T, H, W) int and GT (T, H, W) uint8 of frames ``start ...``,
        pools every feature chunk whose maps are all in, and drops what was pooled."""
        if self._video is None or self._rows is None:
            raise RuntimeError("feature writer: add_chunk before begin_video")
        if start != self._segmented:
            raise RuntimeError(
                f"feature writer, video {self._video!r}: maps of frame {start} given where frame "
                f"{self._segmented} was expected"
            )
        if segments.shape != gt.shape:
            raise ValueError(f"segment maps {tuple(segments.shape)} and GT {tuple(gt.shape)} differ in shape")
        self._segments.extend(segments.cpu().unbind(0))
        self._gt.extend(gt.cpu().unbind(0))
        self._segmented += int(segments.shape[0])
        while self._bounds and self._bounds[0][1] <= self._segmented:
            first, stop = self._bounds.pop(0)
            if self._listened < stop:
                raise RuntimeError(
                    f"feature writer, video {self._video!r}: frames {self._listened}..{stop - 1} have segment maps "
                    "but were never encoded: the source did not call its frame_listeners"
                )
            count = stop - first
            features = torch.cat(self._features[:count]).float()  # (T, C, h, w) float32, as SAM2Encoder returns
            self._rows.add(features, torch.stack(self._segments[:count]), torch.stack(self._gt[:count]), first)
            del self._features[:count], self._segments[:count], self._gt[:count]
            self._pooled = stop

    def finish_video(self) -> int:
        """Writes the video's feature file (atomically); returns its number of rows.

        Raises:
            RuntimeError: frames of the video are not pooled yet (maps missing).
        """
        if self._video is None or self._rows is None:
            raise RuntimeError("feature writer: finish_video before begin_video")
        if self._pooled != self._num_frames:
            raise RuntimeError(
                f"feature writer, video {self._video!r}: {self._pooled} of {self._num_frames} frames pooled at the end "
                "of the video"
            )
        arrays = self._rows.arrays()
        self.cache.write(self.split, self._video, arrays)
        rows = int(arrays["ids"].shape[0])
        self.rows_written += rows
        self._video = None
        self._reset()
        return rows
