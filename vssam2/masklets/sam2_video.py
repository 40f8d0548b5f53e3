"""SAM2 masklet sources: proposals on keyframes, propagation through windows, stitching.

:class:`SAM2VideoSource` (``"sam2_video"``) is the study's pipeline: automatic proposals on
the first frame of each window of ``window`` frames, every kept proposal added as an object
to SAM2's video predictor, propagated frame by frame to the end of the window.
:class:`SAM2FrameSource` (``"sam2_frame"``) is the ``window=1`` baseline: proposals on every
frame, no propagation.

Design (streaming, incremental):

- Windows are fixed on video frame indices: [0, W), [W, 2W), ... whatever the chunking.
  Frames are processed one at a time as chunks arrive; a frame's map is computed as soon as
  the frame is there (keyframe: proposals + prompts; other frames: one propagation step), so
  ``add_chunk`` returns the maps of exactly its frames with no buffering latency, and the
  maps do not depend on how the video is chunked. The video predictor's state is built from
  memory (:mod:`vssam2.masklets.video_memory`); images are dropped once encoded, so memory is
  bounded by one window's memory bank.
- The encoder runs once per frame. A keyframe's ``forward_image`` output serves the proposer
  (``propose(frame, backbone_out=...)``), the new window's prompts and memory, and the
  stitching step of the previous window.
- Each window's state has the nominal length W + 1 (W frames plus the next keyframe it is
  stitched on) whatever the length of the video: frame t's output never depends on later
  frames (sam2 reads ``num_frames`` while tracking; see ``init_state_from_frames``).
- Keyframe masks are the video predictor's output for the mask prompts (as
  ``propagate_in_video`` yields them: the prompt at 1/4 model resolution, upsampled), so all
  frames of a window come from the same model output; with ``window=1`` the proposals' own
  full-resolution masks are used.

Stitching (the masklet ids across windows): with ``stitch_propagate`` (default) the previous
window's objects are propagated one frame further, onto the new keyframe (encoder features
shared); otherwise their masks on the previous window's last frame are used (``window=1``
always uses the previous frame's proposals). The mask IoU of every (old object, new proposal)
pair is computed at frame resolution on the raw per-object masks (before overlaps are
resolved); pairs with IoU ≥ ``stitch_iou`` (and > 0) are matched greedily by decreasing IoU,
one to one; a matched proposal takes the old masklet's id, every other proposal gets a new
id (ids are unique within a video and increase in creation order, proposals in decreasing
predicted IoU). Old masklets that no proposal matches end. A masklet's scores in the table are
those of the latest proposal it was matched to.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from vssam2.masklets.aggregator import ORDERS, PaintOrder, aggregate_masks
from vssam2.masklets.base import MaskletSource
from vssam2.masklets.proposals import ProposalParams, Proposals
from vssam2.masklets.stock_proposer import preprocess_frame
from vssam2.masklets.video_memory import (
    add_mask_prompt,
    append_encoded_frame,
    init_state_from_frames,
    track_frame,
)

ProposerKind = Literal["stock", "fast"]
PROPOSERS: tuple[ProposerKind, ...] = ("stock", "fast")


@dataclass
class EncodedFrame:
    """One frame's model input and image-encoder output, shared by every consumer of the frame.

    Attributes:
        image: (1, 3, S, S) float32 model input (sam2's image-predictor preprocessing).
        backbone_out: ``predictor.forward_image(image)``.
    """

    image: torch.Tensor
    backbone_out: dict[str, Any]


class FrameWork(Protocol):
    """Where a SAM2 source gets a frame's encoding and a keyframe's proposals.

    A source on its own computes both itself; :class:`vssam2.masklets.sharing.SharedFrameWork`
    hands several sources of one model (the values of a sweep) the same encoder pass and one
    prompt decoding per frame.
    """

    def encoded(self, source: SAM2VideoSource, frame: torch.Tensor, t: int) -> EncodedFrame:
        """The encoding of video frame ``t`` (``frame``: (H, W, 3) uint8)."""

    def proposals(self, source: SAM2VideoSource, frame: torch.Tensor, t: int, encoded: EncodedFrame) -> Proposals:
        """``source``'s automatic proposals on keyframe ``t``."""


class OwnWork:
    """A source computing its own encodings and proposals (nothing shared)."""

    def encoded(self, source: SAM2VideoSource, frame: torch.Tensor, t: int) -> EncodedFrame:
        return source.encode(frame)

    def proposals(self, source: SAM2VideoSource, frame: torch.Tensor, t: int, encoded: EncodedFrame) -> Proposals:
        return source.proposer.propose(frame, backbone_out=encoded.backbone_out)


#: Called with (video frame index, frame, its encoding) for every frame a SAM2 source encodes.
FrameListener = Callable[[int, torch.Tensor, EncodedFrame], None]


def stitch_ids(
    prev_masks: torch.Tensor,
    prev_ids: torch.Tensor,
    new_masks: torch.Tensor,
    iou_thresh: float,
    next_id: int,
) -> tuple[torch.Tensor, int]:
    """Gives new masks the ids of the old masks they continue.

    Args:
        prev_masks: (M, H, W) bool, the previous masklets on the frame of ``new_masks``.
        prev_ids: (M,) their ids.
        new_masks: (N, H, W) bool, the new proposals (in priority order).
        iou_thresh: a pair matches when mask IoU ≥ this (and IoU > 0).
        next_id: first id to hand out to an unmatched new mask.

    Returns:
        ``(ids, next_id)``: (N,) int64 ids of the new masks (matched: the old id; else
        ``next_id``, ``next_id + 1``, ... in input order) and the next free id. Matching is
        greedy by decreasing IoU, one to one; ties go to the lower new index, then the lower
        old index.
    """
    num_new = int(new_masks.shape[0])
    ids = torch.zeros(num_new, dtype=torch.int64)
    matched = torch.zeros(num_new, dtype=torch.bool)
    num_prev = int(prev_masks.shape[0])
    if num_new and num_prev:
        if prev_masks.shape[1:] != new_masks.shape[1:]:
            raise ValueError(f"mask sizes differ: {tuple(prev_masks.shape[1:])} vs {tuple(new_masks.shape[1:])}")
        new_flat = new_masks.reshape(num_new, -1).to(prev_masks.device, torch.float32)
        prev_flat = prev_masks.reshape(num_prev, -1).float()
        inter = (new_flat @ prev_flat.T).cpu().double()  # exact for < 2^24 pixels
        area_new = new_flat.sum(dim=1).cpu().double()
        area_prev = prev_flat.sum(dim=1).cpu().double()
        union = area_new[:, None] + area_prev[None, :] - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
        good = (iou >= iou_thresh) & (iou > 0)
        cand = torch.nonzero(good)  # row-major: by new index, then old index
        order = torch.sort(-iou[good], stable=True).indices
        used_prev = torch.zeros(num_prev, dtype=torch.bool)
        for n, m in cand[order].tolist():
            if not matched[n] and not used_prev[m]:
                matched[n] = True
                used_prev[m] = True
                ids[n] = int(prev_ids[m])
    for n in range(num_new):
        if not matched[n]:
            ids[n] = next_id
            next_id += 1
    return ids, next_id


def checkpoint_fingerprint(checkpoint: str | None) -> dict[str, Any] | None:
    """Path, size, mtime and SHA-256 of the first MiB of a checkpoint (None: random weights)."""
    if checkpoint is None:
        return None
    path = Path(checkpoint).expanduser().resolve()
    if not path.is_file():
        return {"path": str(path), "missing": True}
    stat = path.stat()
    with path.open("rb") as fh:
        head = hashlib.sha256(fh.read(1 << 20)).hexdigest()
    return {"path": str(path), "size": stat.st_size, "mtime": int(stat.st_mtime), "sha256_first_mib": head}


class SAM2VideoSource(MaskletSource):
    """SAM2 automatic proposals on keyframes, propagated through fixed windows, stitched.

    Args:
        config: SAM2 config name or alias (see ``sam2_model.resolve_config``).
        checkpoint: local checkpoint; None = random weights (seeded with 0, tests only).
        device: "cpu", "cuda", "cuda:1", ...
        image_size: model input size override (multiple of 32); None = the config's.
        overrides: extra Hydra overrides of the model config.
        window: frames per window; proposals on the first frame of each window, propagation
            through the rest. 1 = proposals on every frame, no propagation.
        proposal: proposal parameters (default: the study's, ``ProposalParams()``).
        proposer: "stock" (sam2's automatic mask generator) or "fast"
            (``vssam2.masklets.fast_proposer.FastProposer``).
        stitch_iou: mask IoU at which a new proposal continues an old masklet's id; > 1
            disables stitching.
        stitch_propagate: stitch on the previous window's objects propagated onto the new
            keyframe (one extra propagation step per window); False: on their masks on the
            previous window's last frame. Ignored when ``window=1``.
        order: paint order of overlapping masklets ("area", "score", "given").
        max_objects: keep at most this many proposals per window (highest predicted IoU);
            None = all.
        bf16: run the model under bfloat16 autocast (CUDA or CPU).
        batch_objects: propagate all objects of a window in one batch per frame
            (:func:`vssam2.masklets.batched_tracking.track_frame_batched`) instead of one
            object at a time; same masks up to floating-point differences (tested), so
            it is not part of :meth:`config` (like ``points_per_batch``).
    """

    name = "sam2_video"

    def __init__(
        self,
        config: str,
        checkpoint: str | None = None,
        device: str = "cpu",
        image_size: int | None = None,
        overrides: list[str] | None = None,
        window: int = 32,
        proposal: ProposalParams | None = None,
        proposer: ProposerKind = "stock",
        stitch_iou: float = 0.5,
        stitch_propagate: bool = True,
        order: PaintOrder = "area",
        max_objects: int | None = None,
        bf16: bool = False,
        batch_objects: bool = True,
    ) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if proposer not in PROPOSERS:
            raise ValueError(f"proposer must be one of {PROPOSERS}, got {proposer!r}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if max_objects is not None and max_objects < 1:
            raise ValueError(f"max_objects must be >= 1 or None, got {max_objects}")
        self.sam2_config = config
        self.checkpoint = checkpoint
        self.device = device
        self.image_size = image_size
        self.overrides = list(overrides or [])
        self.window = int(window)
        self.proposal = proposal if proposal is not None else ProposalParams()
        self.proposer_name = proposer
        self.stitch_iou = float(stitch_iou)
        self.stitch_propagate = bool(stitch_propagate)
        self.order = order
        self.max_objects = max_objects
        self.bf16 = bool(bf16)
        self.batch_objects = bool(batch_objects)
        self._predictor = None
        self._proposer = None
        self.timings: dict[str, float] = {}
        #: Where encodings and proposals come from (a sweep shares them between its values).
        self.work: FrameWork = OwnWork()
        #: Told about every encoded frame (e.g. the feature cache written in the same pass).
        self.frame_listeners: list[FrameListener] = []
        self._reset_video_state()

    # ------------------------------------------------------------------ model

    @property
    def predictor(self):
        """The SAM2 video predictor, built on first use."""
        if self._predictor is None:
            from vssam2.masklets.sam2_model import load_sam2_video_predictor
            from vssam2.masklets.sam2_private import check_sam2_private_api

            check_sam2_private_api()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # random-weight models (checkpoint None) are reproducible
                self._predictor = load_sam2_video_predictor(
                    self.sam2_config,
                    self.checkpoint,
                    device=self.device,
                    image_size=self.image_size,
                    overrides=self.overrides,
                )
        return self._predictor

    @property
    def proposer(self):
        """The proposer on the predictor's model, built on first use."""
        if self._proposer is None:
            if self.proposer_name == "stock":
                from vssam2.masklets.stock_proposer import StockProposer

                self._proposer = StockProposer(self.predictor, self.proposal)
            else:
                from vssam2.masklets.fast_proposer import FastProposer

                self._proposer = FastProposer(self.predictor, self.proposal)
        return self._proposer

    def config(self) -> dict[str, Any]:
        config = {
            "source": self.name,
            "sam2_config": self.sam2_config,
            "checkpoint": checkpoint_fingerprint(self.checkpoint),
            "image_size": self.image_size,
            "overrides": list(self.overrides),
            "window": self.window,
            "proposal": self.proposal.cache_key(),
            "proposer": self.proposer_name,
            "stitch_iou": self.stitch_iou,
            "stitch_propagate": self.stitch_propagate if self.window > 1 else None,
            "order": self.order,
            "max_objects": self.max_objects,
            "bf16": self.bf16,
        }
        return config

    # ------------------------------------------------------------------ per video

    def _reset_video_state(self) -> None:
        self._state: dict[str, Any] | None = None  # the current window's predictor state
        self._ids = torch.zeros(0, dtype=torch.int64)  # masklet id per object of the window
        self._scores = torch.zeros(0)  # predicted IoU per object (order="score")
        self._last_masks: torch.Tensor | None = None  # (N, H, W) bool, objects on the last frame
        self._next_id = 1

    def _begin(self) -> None:
        self._reset_video_state()
        self.timings = {}
        _ = self.predictor, self.proposer  # build now, not inside the first chunk's timings

    def _end(self) -> None:
        self._reset_video_state()

    def _autocast(self):
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16)

    def _tick(self, key: str, t0: float) -> float:
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[key] = self.timings.get(key, 0.0) + now - t0
        return now

    def _segment(self, frames: torch.Tensor, start: int, gt: torch.Tensor | None) -> torch.Tensor:
        maps = []
        with torch.inference_mode(), self._autocast():
            for i in range(frames.shape[0]):
                maps.append(self._process_frame(frames[i], start + i))
        return torch.stack(maps)

    def _paint(self, masks: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        segments = aggregate_masks(masks, self._ids, self._scores, self.order).cpu()
        self._tick("aggregate", t0)
        return segments

    def _track(self, state: dict[str, Any], frame_idx: int) -> torch.Tensor:
        """(N, 1, H, W) mask logits of every object of ``state`` on ``frame_idx``."""
        if self.batch_objects:
            from vssam2.masklets.batched_tracking import track_frame_batched

            return track_frame_batched(self.predictor, state, frame_idx)
        return track_frame(self.predictor, state, frame_idx)

    def is_keyframe(self, t: int) -> bool:
        """Whether video frame ``t`` starts a window (proposals are made there)."""
        return t % self.window == 0

    def encode(self, frame: torch.Tensor) -> EncodedFrame:
        """Preprocesses and encodes one (H, W, 3) uint8 frame (under this source's autocast)."""
        predictor = self.predictor
        with torch.inference_mode(), self._autocast():
            image = preprocess_frame(frame, predictor.image_size, predictor.device)
            return EncodedFrame(image, predictor.forward_image(image))

    def _process_frame(self, frame: torch.Tensor, t: int) -> torch.Tensor:
        """Segment map (H, W) int32 of video frame ``t``."""
        t0 = time.perf_counter()
        encoded = self.work.encoded(self, frame, t)
        self._tick("encoder", t0)
        for listener in self.frame_listeners:
            listener(t, frame, encoded)
        local = t % self.window
        if local == 0:
            masks = self._keyframe(frame, t, encoded)
        elif self._state is None:  # the window has no objects
            masks = torch.zeros((0, *frame.shape[:2]), dtype=torch.bool)
        else:
            t0 = time.perf_counter()
            idx = append_encoded_frame(self._state, encoded.image, encoded.backbone_out)
            masks = self._track(self._state, idx)[:, 0] > 0
            self._tick("propagation", t0)
        self._last_masks = masks
        return self._paint(masks)

    def _keyframe(self, frame: torch.Tensor, t: int, encoded: EncodedFrame) -> torch.Tensor:
        """Proposals on a keyframe, stitched to the previous masklets; returns (N, H, W) masks."""
        predictor = self.predictor
        height, width = frame.shape[:2]
        image, backbone_out = encoded.image, encoded.backbone_out
        t0 = time.perf_counter()

        # The previous masklets on this keyframe.
        prev_masks = self._last_masks
        if self._state is not None and self.stitch_propagate and self.window > 1:
            idx = append_encoded_frame(self._state, image, backbone_out)
            prev_masks = self._track(self._state, idx)[:, 0] > 0
            t0 = self._tick("stitch_propagation", t0)
        self._state = None  # the previous window is done
        if prev_masks is None:
            prev_masks = torch.zeros((0, height, width), dtype=torch.bool)

        proposals: Proposals = self.work.proposals(self, frame, t, encoded)
        for key, value in proposals.timings.items():
            self.timings[f"proposals/{key}"] = self.timings.get(f"proposals/{key}", 0.0) + value
        t0 = self._tick("proposals", t0)
        keep = len(proposals) if self.max_objects is None else min(len(proposals), self.max_objects)
        new_masks = proposals.masks[:keep].to(prev_masks.device)
        ids, self._next_id = stitch_ids(prev_masks, self._ids, new_masks, self.stitch_iou, self._next_id)
        for k in range(keep):
            self.tracker.set_scores(int(ids[k]), float(proposals.predicted_iou[k]), float(proposals.stability[k]))
        self._ids = ids
        self._scores = proposals.predicted_iou[:keep].float()
        t0 = self._tick("stitch", t0)

        if self.window == 1 or keep == 0:
            return new_masks
        state = init_state_from_frames(
            predictor, None, height, width, resize="bilinear", num_frames=self.window + 1, warm_up=False
        )
        append_encoded_frame(state, image, backbone_out)
        for k in range(keep):
            add_mask_prompt(predictor, state, 0, int(ids[k]), new_masks[k])
        predictor.propagate_in_video_preflight(state)
        masks = track_frame(predictor, state, 0)[:, 0] > 0
        self._state = state
        self._tick("propagation", t0)
        return masks


class SAM2FrameSource(SAM2VideoSource):
    """SAM2 automatic proposals on every frame, no propagation (the window=1 baseline).

    Masklet ids are stitched from frame to frame by mask IoU (see :func:`stitch_ids`). Same
    arguments as :class:`SAM2VideoSource` without ``window`` and ``stitch_propagate``.
    """

    name = "sam2_frame"

    def __init__(
        self,
        config: str,
        checkpoint: str | None = None,
        device: str = "cpu",
        image_size: int | None = None,
        overrides: list[str] | None = None,
        proposal: ProposalParams | None = None,
        proposer: ProposerKind = "stock",
        stitch_iou: float = 0.5,
        order: PaintOrder = "area",
        max_objects: int | None = None,
        bf16: bool = False,
    ) -> None:
        super().__init__(
            config=config,
            checkpoint=checkpoint,
            device=device,
            image_size=image_size,
            overrides=overrides,
            window=1,
            proposal=proposal,
            proposer=proposer,
            stitch_iou=stitch_iou,
            stitch_propagate=False,
            order=order,
            max_objects=max_objects,
            bf16=bf16,
        )
