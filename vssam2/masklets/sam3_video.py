"""SAM 3 masklet source: text prompts detected on every frame, tracked through fixed windows, stitched.

:class:`SAM3VideoSource` (``"sam3_video"``) runs transformers' SAM 3 video model
(``Sam3VideoModel``: a DETR-style detector prompted with text, and a SAM2-style memory tracker
sharing its ViT backbone) in its streaming mode: every frame is given to the model from memory as
it arrives (``model(inference_session=session, frame=pixel_values)``), so the source needs no
video up front and returns each chunk's maps with no latency.

Per frame, SAM 3 runs the ViT once (its output feeds both the detector and, through
``tracker_neck``, the tracker), the detector once per prompt (DETR encoder, decoder and mask head,
conditioned on the prompt's text embedding), one tracker step for every tracked object (memory
attention + mask decoder, then the memory encoder on the frame's masks), and its association
heuristics: a detection that overlaps no tracked object of its prompt (mask IoU < SAM 3's
``assoc_iou_thresh``) and scores at least ``new_object_threshold`` becomes a new object. Text
embeddings are computed once per source (the first video) and given to every session; the
tokenizer pads each prompt to 32 tokens.

Streaming mode has no hotstart: SAM 3 removes unconfirmed or duplicated objects only when it can
look ``hotstart_delay`` frames ahead (``propagate_in_video_iterator`` over a whole video); frame
by frame it keeps every object it adds until the session ends.

Windows (fixed on video frame indices: [0, W), [W, 2W), ... whatever the chunking): each window
runs in a fresh inference session. Why: a session never drops an object in streaming mode, so
without windows the set of tracked objects — and the per-frame tracker cost, linear in it — only
grows, up to ``max_objects``, with objects long gone; and the session keeps every object's
conditioning frames (one per detection, more at each re-conditioning) for the object pointers.
At the start of each window SAM 3 detects afresh; the window's first-frame objects are matched to
the previous window's objects on the previous frame by mask IoU (:func:`stitch_ids`, greedy by
decreasing IoU, one to one, ≥ ``stitch_iou``), only between objects of the same class; a matched
object keeps the old masklet id, every other object gets a new one. Objects added later in a
window get new ids (SAM 3 itself decided they are new). Ids are unique within a video and
increase in creation order (within a frame, by decreasing detection score).

Memory within a window stays bounded by what the tracker can still read: after each frame the
source drops the frame's pixels, the per-object high-resolution masks SAM 3 stores in its outputs
(used only within the frame), tracked-frame memories older than the tracker can reach
(``max(num_maskmem, max_object_pointers_in_encoder)`` frames), and per-frame score bookkeeping
of past frames. None of this changes any output (tested against transformers' own loop).

Masks: SAM 3's low-resolution mask logits (``low_res_mask_size``², 288² for the real model)
upsampled bilinearly to the frame, > 0, as ``Sam3VideoProcessor.postprocess_outputs`` does, but
without its per-prompt non-overlap step: overlaps between objects are resolved by the detection
score (the higher score paints on top; ``aggregate_masks(order="score")``). The score table
records each masklet's detection score (the score of the detection that created it, or of the
latest one it was stitched to) as ``predicted_iou``, NaN stability, and as ``label`` the class id
of the prompt that produced it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vssam2.labels import NUM_CLASSES
from vssam2.masklets.aggregator import aggregate_masks
from vssam2.masklets.base import MaskletSource
from vssam2.masklets.prompts import normalize_prompt, resolve_prompts
from vssam2.masklets.sam2_video import stitch_ids
from vssam2.masklets.sam3_model import (
    MAX_PROMPT_TOKENS,
    SAM3_DTYPES,
    Sam3Dtype,
    checkpoint_identity,
    load_sam3,
    torch_dtype,
)

#: Timed stages (seconds, summed over a video) in :attr:`SAM3VideoSource.timings`, every one
#: present (0.0 when it did not run in the video).
STAGES: tuple[str, ...] = (
    "preprocess",  # uint8 frames → normalised model input (the processor)
    "text_encoder",  # prompt embeddings: once per source, in the first video's timings
    "vision_encoder",  # the ViT and the tracker's FPN neck
    "detector",  # DETR encoder / decoder / mask head, all prompts
    "tracker",  # tracker steps and memory encoding, all objects
    "association",  # the rest of SAM 3's frame step: matching, NMS, hole filling, bookkeeping
    "postprocess",  # upsampling masks, stitching ids, painting the map
)
#: The stages timed by forward hooks inside SAM 3's frame step.
_HOOKED_STAGES: tuple[str, ...] = ("vision_encoder", "detector", "tracker")


def _check_prompts(prompts: Sequence[str], prompt_classes: Sequence[int] | None) -> tuple[list[str], list[int]]:
    """Validated prompts and their class ids (default: each prompt's index)."""
    if isinstance(prompts, str):
        raise TypeError(f"prompts must be a list of strings, got the string {prompts!r}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("SAM3VideoSource needs at least one text prompt, got an empty list")
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"every prompt must be a non-empty string, got {prompt!r} in {prompts}")
    seen: dict[str, str] = {}
    for prompt in prompts:
        key = normalize_prompt(prompt)
        if key in seen:
            # The processor merges prompts of identical text: two would share one detector run
            # and one class.
            raise ValueError(
                f"prompts {seen[key]!r} and {prompt!r} are the same text to SAM 3 (its tokenizer lowercases and "
                f"collapses whitespace); give each prompt once"
            )
        seen[key] = prompt
    if prompt_classes is None:
        classes = list(range(len(prompts)))
    else:
        classes = list(prompt_classes)
        if len(classes) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(classes)} prompt_classes; give one class id per prompt")
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise ValueError(f"prompt_classes must be non-negative ints, got {c!r} in {classes}")
    return prompts, classes


class SAM3VideoSource(MaskletSource):
    """SAM 3 text-prompted detection and tracking through fixed windows, stitched (module docstring).

    Args:
        checkpoint: local SAM 3 checkpoint folder (see :mod:`vssam2.masklets.sam3_model` for how
            to get ``facebook/sam3``); checked when the model loads (the first video),
            so configs naming it parse, print and expand into sweeps on machines without it.
        prompts: the text prompts (noun phrases), each detected on every frame: a prompt file
            (YAML: template, synonyms, a class subset; :func:`vssam2.masklets.prompts.load_prompts`,
            e.g. configs/prompts/vspw.yaml), None = every class of the dataset by name, or a
            list of prompts (a user's own; then ``prompt_classes`` names their classes).
        prompt_classes: with a list of prompts, the class id of each (the ``label`` of its
            masklets); None = the prompt's index.
        num_classes: the dataset's class count (a prompt file's classes must be its classes).
        window: frames per window; SAM 3 restarts (fresh session, fresh detections) on the first
            frame of each. 1 = detection on every frame, no tracking.
        score_threshold: detections scoring above this are kept (SAM 3's
            ``score_threshold_detection``; the score is the detection probability times the
            prompt's presence probability).
        new_object_threshold: a kept detection that matches no tracked object becomes a new
            object when it scores at least this (SAM 3's ``new_det_thresh``).
        max_objects: at most this many objects tracked per window (beyond it SAM 3 keeps the
            highest-scoring new detections, then adds none).
        stitch_iou: mask IoU at which a window's first-frame object continues a previous
            window's masklet; > 1 disables stitching.
        fill_holes: SAM 3's mask clean-up: fill holes and remove sprinkles of at most its
            ``fill_hole_area`` pixels (of the low-resolution masks).
        device: "cpu", "cuda", "cuda:1", ...
        dtype: "float32" (use on CPU) or "bfloat16" (CUDA: about half the memory and time).
    """

    name = "sam3_video"

    def __init__(
        self,
        checkpoint: str,
        prompts: str | Sequence[str] | None = None,
        prompt_classes: Sequence[int] | None = None,
        num_classes: int = NUM_CLASSES,
        window: int = 32,
        score_threshold: float = 0.5,
        new_object_threshold: float = 0.7,
        max_objects: int = 64,
        stitch_iou: float = 0.5,
        fill_holes: bool = True,
        device: str = "cpu",
        dtype: Sam3Dtype = "float32",
    ) -> None:
        super().__init__()
        if prompts is None or isinstance(prompts, (str, Path)):
            if prompt_classes is not None:
                raise ValueError("prompt_classes goes with a list of prompts, not with a prompt file")
            prompt_set = resolve_prompts(prompts, num_classes)
            prompts, prompt_classes = list(prompt_set.prompts), list(prompt_set.prompt_class)
        self.prompts, self.prompt_classes = _check_prompts(prompts, prompt_classes)
        wrong = [c for c in self.prompt_classes if c >= num_classes]
        if wrong:
            raise ValueError(f"prompt_classes {wrong[:10]} are not class ids of a dataset of {num_classes} classes")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        for label, value in (("score_threshold", score_threshold), ("new_object_threshold", new_object_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{label} must be in [0, 1], got {value}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        if dtype not in SAM3_DTYPES:
            raise ValueError(f"dtype must be one of {SAM3_DTYPES}, got {dtype!r}")
        self.checkpoint = str(checkpoint)
        self.window = int(window)
        self.score_threshold = float(score_threshold)
        self.new_object_threshold = float(new_object_threshold)
        self.max_objects = int(max_objects)
        self.stitch_iou = float(stitch_iou)
        self.fill_holes = bool(fill_holes)
        self.device = device
        self.dtype: Sam3Dtype = dtype
        self._prompt_index = {prompt: i for i, prompt in enumerate(self.prompts)}
        self._model: Any = None
        self._processor: Any = None
        self._text: list[tuple[torch.Tensor, torch.Tensor, Any]] | None = None  # per prompt: ids, mask, embeds
        self._depth: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self.timings: dict[str, float] = {}
        self._reset_video_state()

    # ------------------------------------------------------------------ model

    @property
    def model(self) -> Any:
        """The ``Sam3VideoModel``, loaded on first use, with this source's thresholds."""
        if self._model is None:
            self._load()
        return self._model

    @property
    def processor(self) -> Any:
        """The ``Sam3VideoProcessor``, loaded with the model."""
        if self._processor is None:
            self._load()
        return self._processor

    def _load(self) -> None:
        model, processor = load_sam3(self.checkpoint, device=self.device, dtype=self.dtype)
        # The model reads these attributes (copied from its config at init) on every frame; the
        # model is this source's own, so setting them changes no one else's.
        model.score_threshold_detection = self.score_threshold
        model.new_det_thresh = self.new_object_threshold
        model.max_num_objects = self.max_objects
        if not self.fill_holes:
            model.fill_hole_area = 0
        for prompt in self.prompts:
            length = len(processor.tokenizer(prompt).input_ids)
            if length > MAX_PROMPT_TOKENS:
                raise ValueError(
                    f"prompt {prompt!r} is {length} tokens long; SAM 3's text encoder takes at most {MAX_PROMPT_TOKENS}"
                )
        self._model, self._processor = model, processor
        self._install_timers(model)
        tracker = model.tracker_model.config
        # A tracked frame's memory is read for num_maskmem − 1 frames, its object pointer for
        # max_object_pointers_in_encoder − 1 frames (the tracker's two look-backs).
        self._horizon = max(int(tracker.num_maskmem), int(tracker.max_object_pointers_in_encoder))

    def config(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "checkpoint": checkpoint_identity(self.checkpoint),
            "prompts": list(self.prompts),
            "prompt_classes": list(self.prompt_classes),
            "window": self.window,
            "score_threshold": self.score_threshold,
            "new_object_threshold": self.new_object_threshold,
            "max_objects": self.max_objects,
            "stitch_iou": self.stitch_iou,
            "fill_holes": self.fill_holes,
            "dtype": self.dtype,
        }

    # ------------------------------------------------------------------ timings

    def _sync(self) -> None:
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)

    def _tick(self, key: str, t0: float) -> float:
        self._sync()
        now = time.perf_counter()
        self.timings[key] = self.timings.get(key, 0.0) + now - t0
        return now

    def _enter(self, key: str) -> None:
        # Only the outermost call of a stage counts (the memory encoder runs inside and outside
        # the tracker's forward).
        if self._depth.get(key, 0) == 0:
            self._sync()
            self._started[key] = time.perf_counter()
        self._depth[key] = self._depth.get(key, 0) + 1

    def _exit(self, key: str) -> None:
        self._depth[key] -= 1
        if self._depth[key] == 0:
            self._tick(key, self._started[key])

    def _hooked_time(self) -> float:
        return sum(self.timings.get(key, 0.0) for key in _HOOKED_STAGES)

    def _install_timers(self, model: Any) -> None:
        """Forward hooks on the modules of each stage (the model runs them all inside one call)."""
        stages = {
            "vision_encoder": (model.detector_model.vision_encoder, model.tracker_neck),
            "detector": (model.detector_model,),
            "tracker": (model.tracker_model, model.tracker_model.memory_encoder),
        }
        for key, modules in stages.items():
            for module in modules:
                module.register_forward_pre_hook(lambda _m, _a, key=key: self._enter(key))
                module.register_forward_hook(lambda _m, _a, _o, key=key: self._exit(key))

    # ------------------------------------------------------------------ per video

    def _reset_video_state(self) -> None:
        self._session: Any = None  # the current window's Sam3VideoInferenceSession
        self._window_start = 0
        self._masklet_of: dict[int, int] = {}  # SAM 3 object id in the session → masklet id
        self._prev_masks: torch.Tensor | None = None  # (M, H, W) bool, objects on the last frame
        self._prev_ids = torch.zeros(0, dtype=torch.int64)  # (M,) their masklet ids
        self._prev_classes = torch.zeros(0, dtype=torch.int64)  # (M,) their class ids
        self._next_id = 1
        self.object_frames = 0  # Σ over the video's frames of the objects SAM 3 tracked (for per-object costs)

    def _begin(self) -> None:
        self._reset_video_state()
        self.timings = dict.fromkeys(STAGES, 0.0)
        self._depth = {}
        _ = self.model  # load now, not inside the first chunk's timings
        if self._text is None:
            self._text = self._encode_prompts()

    def _end(self) -> None:
        self._reset_video_state()

    def _encode_prompts(self) -> list[tuple[torch.Tensor, torch.Tensor, Any]]:
        """Per prompt: token ids, attention mask and text embeddings, as a session would make them."""
        t0 = time.perf_counter()
        session = self.processor.init_video_session(inference_device=self.device, dtype=torch_dtype(self.dtype))
        self.processor.add_text_prompt(session, self.prompts)
        text = []
        with torch.inference_mode():
            for i in range(len(self.prompts)):
                ids, mask = session.prompt_input_ids[i], session.prompt_attention_masks[i]
                embeds = self.model.detector_model.get_text_features(
                    input_ids=ids, attention_mask=mask, return_dict=True
                )
                text.append((ids, mask, embeds))
        self._tick("text_encoder", t0)
        return text

    def _new_session(self) -> Any:
        """A fresh inference session with the prompts and their cached embeddings."""
        session = self.processor.init_video_session(inference_device=self.device, dtype=torch_dtype(self.dtype))
        session.video_height, session.video_width = self._size
        for i, prompt in enumerate(self.prompts):
            prompt_id = session.add_prompt(prompt)
            ids, mask, embeds = self._text[i]
            session.prompt_input_ids[prompt_id] = ids
            session.prompt_attention_masks[prompt_id] = mask
            session.prompt_embeddings[prompt_id] = embeds
        return session

    def _segment(self, frames: torch.Tensor, start: int, gt: torch.Tensor | None) -> torch.Tensor:
        with torch.inference_mode():
            t0 = time.perf_counter()
            inputs = self.processor(images=frames.permute(0, 3, 1, 2), device=self.device, return_tensors="pt")
            pixel_values = inputs.pixel_values  # (T, 3, S, S) float32, normalised
            self._tick("preprocess", t0)
            maps = [self._process_frame(pixel_values[i], start + i) for i in range(frames.shape[0])]
        return torch.stack(maps)

    def _process_frame(self, pixel_values: torch.Tensor, t: int) -> torch.Tensor:
        """Segment map (H, W) int32 of video frame ``t`` from its (3, S, S) model input."""
        if t % self.window == 0:
            self._session = self._new_session()
            self._window_start = t
            self._masklet_of = {}
        session = self._session
        idx = t - self._window_start
        inner = self._hooked_time()
        t0 = time.perf_counter()
        out = self.model(inference_session=session, frame_idx=idx, frame=pixel_values)
        self._tick("association", t0)
        self.timings["association"] -= self._hooked_time() - inner  # the hooked stages ran inside
        self._release(session, idx)

        t0 = time.perf_counter()
        obj_ids, masks, scores, classes = self._frame_objects(session, out)
        self.object_frames += len(obj_ids)
        new = [k for k, obj in enumerate(obj_ids) if obj not in self._masklet_of]
        if new:
            self._name_new(obj_ids, masks, scores, classes, new, stitch=idx == 0 and t > 0)
        ids = torch.tensor([self._masklet_of[obj] for obj in obj_ids], dtype=torch.int64)
        self._prev_masks, self._prev_ids, self._prev_classes = masks, ids, classes
        segments = aggregate_masks(masks, ids, scores, "score").cpu()
        self._tick("postprocess", t0)
        return segments

    def _frame_objects(self, session: Any, out: Any) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
        """The frame's objects: SAM 3 ids, (N, H, W) bool masks at frame size, (N,) float32
        detection scores and (N,) int64 class ids, in SAM 3 id order."""
        height, width = self._size
        hidden = set(out.suppressed_obj_ids or ()) | set(session.hotstart_removed_obj_ids)
        obj_ids = [obj for obj in sorted(out.obj_id_to_mask) if obj not in hidden]
        if not obj_ids:
            empty = torch.zeros((0, height, width), dtype=torch.bool, device=self.device)
            return [], empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64)
        logits = torch.cat([out.obj_id_to_mask[obj] for obj in obj_ids]).float()  # (N, h, w) low-res logits
        # As Sam3VideoProcessor.postprocess_outputs upsamples them.
        masks = F.interpolate(logits[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0] > 0
        scores = torch.tensor([float(out.obj_id_to_score[obj]) for obj in obj_ids], dtype=torch.float32)
        prompts = [self._prompt_index[session.prompts[session.obj_id_to_prompt_id[obj]]] for obj in obj_ids]
        classes = torch.tensor([self.prompt_classes[p] for p in prompts], dtype=torch.int64)
        return obj_ids, masks, scores, classes

    def _name_new(
        self,
        obj_ids: list[int],
        masks: torch.Tensor,
        scores: torch.Tensor,
        classes: torch.Tensor,
        new: list[int],
        stitch: bool,
    ) -> None:
        """Gives the frame's new SAM 3 objects (indices ``new``) masklet ids and table rows.

        ``stitch``: the first frame of a window after the first; new objects may continue the
        previous frame's masklets of their class (mask IoU ≥ ``stitch_iou``).
        """
        new = sorted(new, key=lambda k: (-float(scores[k]), obj_ids[k]))  # hand out ids by decreasing score
        ids = torch.zeros(len(new), dtype=torch.int64)  # 0 = not continued
        if stitch and self._prev_masks is not None and len(self._prev_ids):
            order = torch.tensor(new, dtype=torch.int64)
            for c in torch.unique(classes[order]).tolist():
                mine = (classes[order] == c).nonzero()[:, 0]  # positions in `new` of class c
                theirs = (self._prev_classes == c).nonzero()[:, 0]
                if not len(theirs):
                    continue
                # next_id far below any id: unmatched masks come back negative.
                matched, _ = stitch_ids(
                    self._prev_masks[theirs.to(self._prev_masks.device)],
                    self._prev_ids[theirs],
                    masks[order[mine].to(masks.device)],
                    self.stitch_iou,
                    -(1 << 40),
                )
                ids[mine] = torch.where(matched > 0, matched, ids[mine])
        for j, k in enumerate(new):
            masklet = int(ids[j])
            if masklet == 0:
                masklet = self._next_id
                self._next_id += 1
            self._masklet_of[obj_ids[k]] = masklet
            self.tracker.set_scores(masklet, float(scores[k]), float("nan"), label=int(classes[k]))

    def _release(self, session: Any, idx: int) -> None:
        """Drops what SAM 3's session keeps of frame ``idx`` and earlier that no later frame reads
        (module docstring); outputs are unchanged."""
        # Keep the entry: the tracker reads len(processed_frames) as the number of frames so far.
        session.processed_frames[idx] = session.processed_frames[idx].new_empty(0)
        oldest = idx + 2 - self._horizon  # the next frame reads tracked frames from here on
        for outputs in session.output_dict_per_obj.values():
            for storage in ("cond_frame_outputs", "non_cond_frame_outputs"):
                entry = outputs[storage].get(idx)
                if entry is not None:
                    entry.pop("high_res_masks", None)  # only read by this frame's memory encoding
            tracked = outputs["non_cond_frame_outputs"]
            for frame in [f for f in tracked if f < oldest]:
                del tracked[frame]
        for per_frame in (session.obj_id_to_tracker_score_frame_wise, session.suppressed_obj_ids):
            for frame in [f for f in per_frame if f <= idx]:
                del per_frame[frame]
