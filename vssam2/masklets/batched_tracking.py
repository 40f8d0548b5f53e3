"""Batched propagation: all objects of a video state tracked in one batch per frame.

sam2 1.1.0's ``SAM2VideoPredictor.propagate_in_video`` (and
:func:`vssam2.masklets.video_memory.track_frame`, one step of it) tracks every object
separately: per frame, ``_run_single_frame_inference`` runs memory attention, the mask
decoder and the memory encoder once per object with batch size 1. ``SAM2Base.track_step``
supports a batch of B objects (it is trained that way), provided the B objects' memories are
stacked along dim 0, which is possible when every object has outputs on the same frames, e.g.
all objects prompted on the same keyframe and tracked over the same frames since (the
windows of :class:`vssam2.masklets.sam2_video.SAM2VideoSource`).

:func:`track_frame_batched` is a drop-in replacement for ``track_frame`` that does one
``track_step`` with batch N per frame. It keeps, in ``state["batched_output_dict"]``, the
stacked per-frame outputs ((N, ...) tensors; frames stacked lazily from the per-object
outputs the first time they are needed) and writes each new frame's per-object slices (views,
no copy) back into ``state["output_dict_per_obj"]`` and ``frames_tracked_per_obj``, so the
state stays a valid sam2 state (``track_frame`` may follow).

What it mirrors of the per-object path, so that outputs match it (up to floating-point
differences of batched matrix products):

- the compact output of ``_run_single_frame_inference``: memory features cast to bfloat16
  (and moved to ``storage_device``), memory position encoding from the state's constants,
  ``fill_holes_in_mask_scores`` when ``fill_hole_area > 0`` (per mask, so batch-independent;
  without sam2's ``_C`` extension it is skipped with a warning in both paths);
- ``non_overlap_masks_for_mem_enc``: applied across the batch in ``_encode_new_memory``; with
  one object per call it is a no-op, so it is switched off during the batched step;
- ``num_frames`` (object-pointer history and temporal encoding) from the state, as sam2.
"""

from __future__ import annotations

from typing import Any

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor
from sam2.utils.misc import fill_holes_in_mask_scores

from vssam2.masklets.video_memory import encode_frame

_KINDS = ("cond_frame_outputs", "non_cond_frame_outputs")
_TENSOR_KEYS = ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits")


def _stack_frame(predictor: SAM2VideoPredictor, state: dict[str, Any], kind: str, frame_idx: int) -> dict[str, Any]:
    """The N objects' outputs on one frame stacked along dim 0."""
    outs = [state["output_dict_per_obj"][i][kind].get(frame_idx) for i in range(predictor._get_obj_num(state))]
    if any(out is None for out in outs):
        raise ValueError(
            f"frame {frame_idx} ({kind}) has outputs for some objects only; batched tracking needs every "
            "object prompted and tracked on the same frames"
        )
    stacked: dict[str, Any] = {}
    for key in _TENSOR_KEYS:
        values = [out[key] for out in outs]
        stacked[key] = None if values[0] is None else torch.cat(values, dim=0)
    pos = outs[0]["maskmem_pos_enc"]
    stacked["maskmem_pos_enc"] = None if pos is None else [x[0:1].expand(len(outs), *x.shape[1:]) for x in pos]
    return stacked


def _sync_batched(predictor: SAM2VideoPredictor, state: dict[str, Any]) -> dict[str, dict[int, Any]]:
    """``state["batched_output_dict"]``, with any frame the objects have and it lacks stacked in."""
    batched = state.get("batched_output_dict")
    num_objects = predictor._get_obj_num(state)
    if batched is None or batched.get("num_objects") != num_objects:
        batched = {"num_objects": num_objects, "cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        state["batched_output_dict"] = batched
    first = state["output_dict_per_obj"][0]
    for kind in _KINDS:
        for frame_idx in first[kind]:
            if frame_idx not in batched[kind]:
                batched[kind][frame_idx] = _stack_frame(predictor, state, kind, frame_idx)
        # frames dropped from the per-object outputs (e.g. cond frames promoted by preflight)
        for frame_idx in [t for t in batched[kind] if t not in first[kind]]:
            del batched[kind][frame_idx]
    return batched


@torch.inference_mode()
def track_frame_batched(predictor: SAM2VideoPredictor, state: dict[str, Any], frame_idx: int) -> torch.Tensor:
    """``track_frame`` with all objects in one ``track_step`` batch.

    Call ``predictor.propagate_in_video_preflight(state)`` once after adding the prompts (all
    objects on the same frame(s)), then this for frames in increasing order. Conditioning
    frames return their stored output.

    Returns:
        (N, 1, video_height, video_width) mask logits, objects in ``state["obj_ids"]`` order.

    Raises:
        ValueError: when the objects do not all have outputs on the same frames.
    """
    if frame_idx >= len(state["images"]):
        raise IndexError(f"frame {frame_idx} not added yet ({len(state['images'])} frames)")
    num_objects = predictor._get_obj_num(state)
    if num_objects == 0:
        raise RuntimeError("no objects in the state")
    batched = _sync_batched(predictor, state)
    encode_frame(predictor, state, frame_idx)
    if frame_idx in batched["cond_frame_outputs"]:
        pred_masks = batched["cond_frame_outputs"][frame_idx]["pred_masks"].to(state["device"], non_blocking=True)
    else:
        _, _, vision_feats, vision_pos, feat_sizes = predictor._get_image_feature(state, frame_idx, num_objects)
        non_overlap = predictor.non_overlap_masks_for_mem_enc
        predictor.non_overlap_masks_for_mem_enc = False  # a no-op with one object per call
        try:
            current_out = predictor.track_step(
                frame_idx=frame_idx,
                is_init_cond_frame=False,
                current_vision_feats=vision_feats,
                current_vision_pos_embeds=vision_pos,
                feat_sizes=feat_sizes,
                point_inputs=None,
                mask_inputs=None,
                output_dict=batched,
                num_frames=state["num_frames"],
                track_in_reverse=False,
                run_mem_encoder=True,
                prev_sam_mask_logits=None,
            )
        finally:
            predictor.non_overlap_masks_for_mem_enc = non_overlap
        # the compact output of SAM2VideoPredictor._run_single_frame_inference
        storage_device = state["storage_device"]
        maskmem_features = current_out["maskmem_features"]
        if maskmem_features is not None:
            maskmem_features = maskmem_features.to(torch.bfloat16).to(storage_device, non_blocking=True)
        pred_masks = current_out["pred_masks"]
        if predictor.fill_hole_area > 0:
            pred_masks = fill_holes_in_mask_scores(pred_masks, predictor.fill_hole_area)
        compact = {
            "maskmem_features": maskmem_features,
            "maskmem_pos_enc": predictor._get_maskmem_pos_enc(state, current_out),
            "pred_masks": pred_masks.to(storage_device, non_blocking=True),
            "obj_ptr": current_out["obj_ptr"],
            "object_score_logits": current_out["object_score_logits"],
        }
        batched["non_cond_frame_outputs"][frame_idx] = compact
        for obj_idx in range(num_objects):
            state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"][frame_idx] = {
                key: (
                    None
                    if value is None
                    else [x[obj_idx : obj_idx + 1] for x in value]
                    if isinstance(value, list)
                    else value[obj_idx : obj_idx + 1]
                )
                for key, value in compact.items()
            }
    for obj_idx in range(num_objects):
        state["frames_tracked_per_obj"][obj_idx][frame_idx] = {"reverse": False}
    _, video_res_masks = predictor._get_orig_video_res_output(state, pred_masks)
    return video_res_masks
