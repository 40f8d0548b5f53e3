"""SAM2 video-predictor state fed from frames in memory, growing as frames arrive.

sam2 1.1.0's ``SAM2VideoPredictor.init_state`` only reads JPEG folders or mp4 files and
decodes the whole video up front. :func:`init_state_from_frames` builds the same
``inference_state`` dict from (T, H, W, 3) uint8 frames in memory; :func:`append_frames`
adds frames later (streaming), and :func:`track_frame` runs the body of
``propagate_in_video`` for one frame (no tqdm bar, no fixed video length), so a window can
be propagated frame by frame as chunks arrive. With ``resize="pil"`` the preprocessing is
bit-identical to sam2's JPEG loader (PIL's default bicubic resize of the uint8 frame, /255,
ImageNet normalisation); ``resize="bilinear"`` (default) is sam2's *image* predictor's
(torchvision bilinear antialiased resize), so a keyframe's features serve the automatic mask
generator unchanged.

Images of frames whose features have been computed are dropped from the state (forward
propagation never reads them again), so memory stays bounded by the memory bank.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from sam2.sam2_video_predictor import SAM2VideoPredictor

from vssam2.masklets.stock_proposer import IMAGENET_MEAN, IMAGENET_STD, preprocess_frame

FrameResize = Literal["bilinear", "pil"]
RESIZES: tuple[FrameResize, ...] = ("bilinear", "pil")


def preprocess_video_frame(
    frame: torch.Tensor, image_size: int, resize: FrameResize = "bilinear", device: str | torch.device = "cpu"
) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, S, S) float32 normalised model input.

    ``resize="pil"`` reproduces ``sam2.utils.misc._load_img_as_tensor`` + normalisation
    exactly; ``"bilinear"`` reproduces ``SAM2Transforms`` (the image predictor).
    """
    if resize == "bilinear":
        return preprocess_frame(frame, image_size, device)[0]
    if resize != "pil":
        raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
    array = np.asarray(frame.cpu().numpy() if isinstance(frame, torch.Tensor) else frame, dtype=np.uint8)
    resized = np.array(Image.fromarray(array).resize((image_size, image_size))) / 255.0  # float64 like sam2
    x = torch.from_numpy(resized).permute(2, 0, 1).float().to(device)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device)[:, None, None]
    x -= mean
    x /= std
    return x


def init_state_from_frames(
    predictor: SAM2VideoPredictor,
    frames: torch.Tensor | Sequence[torch.Tensor] | None = None,
    video_height: int | None = None,
    video_width: int | None = None,
    resize: FrameResize = "bilinear",
    num_frames: int | None = None,
    warm_up: bool = True,
) -> dict[str, Any]:
    """The ``inference_state`` of ``predictor.init_state`` built from frames in memory.

    Args:
        predictor: the video predictor.
        frames: (T, H, W, 3) uint8 RGB frames (or a sequence of (H, W, 3)); may be empty or
            None when frames come later through :func:`append_frames` (then give the size).
        video_height, video_width: output size; default: the frames' size.
        resize: "bilinear" (image-predictor preprocessing) or "pil" (sam2's JPEG loader).
        num_frames: nominal length of the clip, fixed up front. sam2 reads
            ``state["num_frames"]`` while tracking (it caps the object-pointer history at
            ``min(num_frames, 16)`` and scales their temporal encoding by it), so outputs of a
            streamed clip equal sam2's on the whole clip only if this is the clip's length.
            None: the number of frames added so far (grows with :func:`append_frames`).
        warm_up: compute frame 0's features now, as ``init_state`` does.

    Returns:
        The state; ``state["num_frames"]`` is the number of frames added so far.
    """
    frames = list(frames) if frames is not None else []
    if frames:
        video_height, video_width = int(frames[0].shape[0]), int(frames[0].shape[1])
    if video_height is None or video_width is None:
        raise ValueError("give frames or video_height and video_width")
    device = predictor.device
    state: dict[str, Any] = {
        "images": [],
        "num_frames": 0,
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": int(video_height),
        "video_width": int(video_width),
        "device": device,
        "storage_device": device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
        # vssam2 extras
        "resize": resize,
        "nominal_num_frames": num_frames,
    }
    append_frames(predictor, state, frames)
    if warm_up and state["num_frames"] > 0:
        with torch.inference_mode():
            encode_frame(predictor, state, 0)
    return state


def append_frames(
    predictor: SAM2VideoPredictor, state: dict[str, Any], frames: torch.Tensor | Sequence[torch.Tensor]
) -> None:
    """Appends (T, H, W, 3) uint8 frames to a state (streaming)."""
    for frame in frames:
        if tuple(frame.shape[:2]) != (state["video_height"], state["video_width"]):
            raise ValueError(
                f"frame of size {tuple(frame.shape[:2])} in a video of size "
                f"{(state['video_height'], state['video_width'])}"
            )
        state["images"].append(preprocess_video_frame(frame, predictor.image_size, state["resize"], state["device"]))
    _update_num_frames(state)


def _update_num_frames(state: dict[str, Any]) -> None:
    nominal = state.get("nominal_num_frames")
    state["num_frames"] = len(state["images"]) if nominal is None else max(nominal, len(state["images"]))


def append_encoded_frame(state: dict[str, Any], image: torch.Tensor, backbone_out: dict[str, Any]) -> int:
    """Appends a frame whose features are already computed (shared between states); returns its index."""
    frame_idx = len(state["images"])
    state["images"].append(None)  # never read: the features are cached
    _update_num_frames(state)
    state["cached_features"] = {frame_idx: (image, backbone_out)}
    return frame_idx


def encode_frame(
    predictor: SAM2VideoPredictor, state: dict[str, Any], frame_idx: int
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Image features of a frame (computed once, cached like ``_get_image_feature`` does).

    Returns ``(image (1, 3, S, S), backbone_out)``; the frame's image is then dropped from the
    state.
    """
    cached = state["cached_features"].get(frame_idx)
    if cached is not None:
        return cached
    image = state["images"][frame_idx]
    if image is None:
        raise RuntimeError(f"features of frame {frame_idx} are needed again but its image was dropped")
    image = image.to(state["device"]).float().unsqueeze(0)
    backbone_out = predictor.forward_image(image)
    state["cached_features"] = {frame_idx: (image, backbone_out)}
    state["images"][frame_idx] = None
    return image, backbone_out


@torch.inference_mode()
def track_frame(predictor: SAM2VideoPredictor, state: dict[str, Any], frame_idx: int) -> torch.Tensor:
    """One step of ``propagate_in_video`` (forward): every object's mask logits on ``frame_idx``.

    Call ``predictor.propagate_in_video_preflight(state)`` once after adding the prompts, then
    this for frames in increasing order. Conditioning frames return their stored output.

    Returns:
        (N, 1, video_height, video_width) mask logits, objects in ``state["obj_ids"]`` order.
    """
    if frame_idx >= len(state["images"]):
        raise IndexError(f"frame {frame_idx} not added yet ({len(state['images'])} frames)")
    encode_frame(predictor, state, frame_idx)
    batch_size = predictor._get_obj_num(state)
    pred_masks_per_obj = []
    for obj_idx in range(batch_size):
        obj_output_dict = state["output_dict_per_obj"][obj_idx]
        if frame_idx in obj_output_dict["cond_frame_outputs"]:
            current_out = obj_output_dict["cond_frame_outputs"][frame_idx]
            pred_masks = current_out["pred_masks"].to(state["device"], non_blocking=True)
        else:
            current_out, pred_masks = predictor._run_single_frame_inference(
                inference_state=state,
                output_dict=obj_output_dict,
                frame_idx=frame_idx,
                batch_size=1,
                is_init_cond_frame=False,
                point_inputs=None,
                mask_inputs=None,
                reverse=False,
                run_mem_encoder=True,
            )
            obj_output_dict["non_cond_frame_outputs"][frame_idx] = current_out
        state["frames_tracked_per_obj"][obj_idx][frame_idx] = {"reverse": False}
        pred_masks_per_obj.append(pred_masks)
    all_pred_masks = torch.cat(pred_masks_per_obj, dim=0)
    _, video_res_masks = predictor._get_orig_video_res_output(state, all_pred_masks)
    return video_res_masks


@torch.inference_mode()
def add_mask_prompt(
    predictor: SAM2VideoPredictor, state: dict[str, Any], frame_idx: int, obj_id: int, mask: torch.Tensor
) -> None:
    """``predictor.add_new_mask`` on a frame not tracked yet, without its video-res output.

    sam2's ``add_new_mask`` consolidates every object's output at video resolution after each
    call (O(N²) for N objects added one by one); this stores the same per-object output and
    returns nothing. Only initial conditioning frames are supported (no corrections).
    """
    obj_idx = predictor._obj_id_to_idx(state, obj_id)
    if frame_idx in state["frames_tracked_per_obj"][obj_idx]:
        raise ValueError(f"frame {frame_idx} is already tracked for object {obj_id}; use add_new_mask for corrections")
    if mask.dim() != 2:
        raise ValueError(f"expected an (H, W) mask, got {tuple(mask.shape)}")
    size = predictor.image_size
    mask_inputs = mask[None, None].float().to(state["device"])
    if tuple(mask.shape) != (size, size):
        mask_inputs = torch.nn.functional.interpolate(
            mask_inputs, size=(size, size), align_corners=False, mode="bilinear", antialias=True
        )
        mask_inputs = (mask_inputs >= 0.5).float()
    state["mask_inputs_per_obj"][obj_idx][frame_idx] = mask_inputs
    state["point_inputs_per_obj"][obj_idx].pop(frame_idx, None)
    current_out, _ = predictor._run_single_frame_inference(
        inference_state=state,
        output_dict=state["output_dict_per_obj"][obj_idx],
        frame_idx=frame_idx,
        batch_size=1,
        is_init_cond_frame=True,
        point_inputs=None,
        mask_inputs=mask_inputs,
        reverse=False,
        run_mem_encoder=False,
    )
    state["temp_output_dict_per_obj"][obj_idx]["cond_frame_outputs"][frame_idx] = current_out
