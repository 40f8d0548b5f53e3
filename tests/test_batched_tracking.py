"""Batched propagation (all objects in one ``track_step`` batch) against sam2's per-object path,
on a tiny random SAM2 (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vssam2.masklets.batched_tracking import track_frame_batched
from vssam2.masklets.proposals import ProposalParams
from vssam2.masklets.random_weights import keep_objects
from vssam2.masklets.sam2_model import TINY_TEST_CONFIG
from vssam2.masklets.sam2_video import SAM2VideoSource
from vssam2.masklets.video_memory import add_mask_prompt, append_frames, init_state_from_frames, track_frame
from vssam2.synthetic import SyntheticConfig, generate_video

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # sam2's "no _C: skip hole filling"

H, W, T = 64, 96, 8
LOGIT_TOL = 1e-4  # max abs difference of mask logits, batched vs per object
PARAMS = ProposalParams(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def _objects_always_present(predictor) -> None:
    """Random weights predict "no object" after the keyframe; force the object score positive
    (as tests/test_sam2_sources.py does) so that propagation gives non-trivial masks."""
    keep_objects(predictor, 10.0)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    video = generate_video(np.random.default_rng(0), SyntheticConfig(height=H, width=W), T)
    return torch.from_numpy(video.frames)


@pytest.fixture(scope="module")
def predictor(tiny_video_predictor):
    return tiny_video_predictor


def _prompts(num_objects: int) -> list[torch.Tensor]:
    masks = []
    for k in range(num_objects):
        mask = torch.zeros(H, W, dtype=torch.bool)
        y, x = 4 + 9 * k, 6 + 14 * k
        mask[y : y + 18 + 2 * k, x : x + 22] = True
        masks.append(mask)
    return masks


def _propagate(predictor, frames, masks, step, num_frames=T):
    state = init_state_from_frames(predictor, frames, num_frames=num_frames)
    for k, mask in enumerate(masks):
        add_mask_prompt(predictor, state, 0, k + 1, mask)
    predictor.propagate_in_video_preflight(state)
    return state, [step(predictor, state, t) for t in range(frames.shape[0])]


@pytest.mark.parametrize("num_objects", [3, 5])
def test_batched_equals_per_object(predictor, frames, num_objects):
    masks = _prompts(num_objects)
    _, reference = _propagate(predictor, frames, masks, track_frame)
    state, batched = _propagate(predictor, frames, masks, track_frame_batched)
    for t, (ref, out) in enumerate(zip(reference, batched)):
        assert out.shape == (num_objects, 1, H, W)
        assert (out - ref).abs().max().item() < LOGIT_TOL, t
        assert torch.equal(out > 0, ref > 0), t
    # non-trivial: objects kept and masks that change over the clip
    assert all((out > 0).any() for out in batched[1:])
    assert not torch.equal(batched[1] > 0, batched[-1] > 0)
    # the state stays a valid sam2 state: per-object outputs and tracked frames are filled in
    for obj_idx in range(num_objects):
        assert sorted(state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"]) == list(range(1, T))
        assert sorted(state["frames_tracked_per_obj"][obj_idx]) == list(range(T))


def test_batched_then_per_object_continues(predictor, frames):
    """The per-object slices written back into the state let ``track_frame`` take over."""
    masks = _prompts(3)
    _, reference = _propagate(predictor, frames, masks, track_frame)
    state = init_state_from_frames(predictor, frames, num_frames=T)
    for k, mask in enumerate(masks):
        add_mask_prompt(predictor, state, 0, k + 1, mask)
    predictor.propagate_in_video_preflight(state)
    outs = [track_frame_batched(predictor, state, t) for t in range(4)]
    outs += [track_frame(predictor, state, t) for t in range(4, 6)]
    outs += [track_frame_batched(predictor, state, t) for t in range(6, T)]  # restacks frames 4, 5
    for ref, out in zip(reference, outs):
        assert (out - ref).abs().max().item() < LOGIT_TOL
        assert torch.equal(out > 0, ref > 0)


def test_mismatched_objects_rejected(predictor, frames):
    """Objects without outputs on the same frames cannot be stacked."""
    state, _ = _propagate(predictor, frames[:3], _prompts(2), track_frame)
    del state["output_dict_per_obj"][1]["non_cond_frame_outputs"][2]
    append_frames(predictor, state, frames[3:4])
    with pytest.raises(ValueError, match="same frames"):
        track_frame_batched(predictor, state, 3)


def _run(source, frames):
    source.begin_video("clip", frames.shape[1], frames.shape[2])
    maps = [source.add_chunk(frames[s : s + 3], s) for s in range(0, frames.shape[0], 3)]
    return torch.cat(maps), source.end_video()


def test_video_source_batch_objects_same_maps(frames):
    kwargs = dict(window=4, proposal=PARAMS, max_objects=4, stitch_iou=0.3)
    results, configs = [], []
    for batch_objects in (False, True):
        source = SAM2VideoSource(TINY_TEST_CONFIG, None, batch_objects=batch_objects, **kwargs)
        _objects_always_present(source.predictor)
        results.append(_run(source, frames))
        configs.append(source.config())
    assert configs[0] == configs[1]  # output-neutral, so not part of the cache key
    (maps, table), (maps_b, table_b) = results
    assert len(set(maps.unique().tolist()) - {0}) >= 2
    assert torch.equal(maps, maps_b)
    assert table.to_json() == table_b.to_json()
