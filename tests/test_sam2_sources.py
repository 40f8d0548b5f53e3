"""SAM2 masklet sources on a tiny random SAM2 (CPU): stock proposer, in-memory video state,
windowed propagation with stitching, the per-frame baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vssam2.masklets.proposals import ProposalParams, Proposals
from vssam2.masklets.random_weights import keep_objects
from vssam2.masklets.sam2_model import TINY_TEST_CONFIG
from vssam2.masklets.sam2_video import SAM2FrameSource, SAM2VideoSource, stitch_ids
from vssam2.masklets.stock_proposer import StockProposer, preprocess_frame
from vssam2.masklets.video_memory import (
    add_mask_prompt,
    append_frames,
    init_state_from_frames,
    track_frame,
)
from vssam2.synthetic import SyntheticConfig, generate_video

H, W, T = 64, 96, 9
# Random weights give arbitrary masks and scores around 0.5: keep everything, bound the count.
PARAMS = ProposalParams(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def _objects_always_present(predictor) -> None:
    """Random weights predict "no object" on most propagated frames (empty masks); force the
    object-score head positive so propagation gives non-trivial masks and stitching happens."""
    keep_objects(predictor, 10.0)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    video = generate_video(np.random.default_rng(0), SyntheticConfig(height=H, width=W), T)
    return torch.from_numpy(video.frames)


@pytest.fixture(scope="module")
def predictor(tiny_video_predictor):
    return tiny_video_predictor


class KeyframeRecorder(SAM2VideoSource):
    """Records the masklet ids of each window's objects and counts encoder passes."""

    def _begin(self) -> None:
        super()._begin()
        self.window_ids: list[list[int]] = []
        self.encoder_calls = 0
        predictor = self.predictor
        if "forward_image" not in vars(predictor):
            original = predictor.forward_image

            def counting(*args, **kwargs):
                self.encoder_calls += 1
                return original(*args, **kwargs)

            predictor.forward_image = counting

    def _keyframe(self, *args):
        masks = super()._keyframe(*args)
        self.window_ids.append(self._ids.tolist())
        return masks


@pytest.fixture(scope="module")
def video_source() -> KeyframeRecorder:
    source = KeyframeRecorder(TINY_TEST_CONFIG, None, window=4, proposal=PARAMS, max_objects=4, stitch_iou=0.3)
    _objects_always_present(source.predictor)
    return source


@pytest.fixture(scope="module")
def whole_run(video_source, frames):
    """The clip fed as one chunk: (maps, table, window ids, encoder passes)."""
    segments, table = _run(video_source, frames, chunk=T)
    return segments, table, list(video_source.window_ids), video_source.encoder_calls


def _run(source, frames: torch.Tensor, chunk: int):
    source.begin_video("clip", frames.shape[1], frames.shape[2])
    maps = [source.add_chunk(frames[s : s + chunk], s) for s in range(0, frames.shape[0], chunk)]
    return torch.cat(maps), source.end_video()


# ---------------------------------------------------------------- stitching


def _box(y0: int, y1: int, x0: int, x1: int, size: tuple[int, int] = (10, 10)) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_stitch_ids_known_answers():
    prev = torch.stack([_box(0, 5, 0, 5), _box(5, 10, 5, 10), _box(0, 2, 8, 10)])
    prev_ids = torch.tensor([3, 7, 9])
    new = torch.stack(
        [
            _box(5, 10, 5, 10),  # = old 7 (IoU 1)
            _box(0, 5, 0, 4),  # old 3: IoU 20/25 = 0.8
            _box(0, 5, 0, 5),  # old 3: IoU 1, wins old 3 over the previous one
            _box(0, 2, 7, 10),  # old 9: IoU 4/6 ≈ 0.67 < 0.7
        ]
    )
    ids, next_id = stitch_ids(prev, prev_ids, new, iou_thresh=0.7, next_id=10)
    assert ids.tolist() == [7, 10, 3, 11]
    assert next_id == 12
    # lower threshold: old 9 continues
    ids, next_id = stitch_ids(prev, prev_ids, new, iou_thresh=0.5, next_id=10)
    assert ids.tolist() == [7, 10, 3, 9] and next_id == 11


def test_stitch_ids_edge_cases():
    new = torch.stack([_box(0, 5, 0, 5), torch.zeros(10, 10, dtype=torch.bool)])
    empty = torch.zeros((0, 10, 10), dtype=torch.bool)
    ids, next_id = stitch_ids(empty, torch.zeros(0, dtype=torch.int64), new, 0.5, 1)
    assert ids.tolist() == [1, 2] and next_id == 3
    ids, next_id = stitch_ids(new, torch.tensor([4, 5]), empty, 0.5, 6)
    assert ids.tolist() == [] and next_id == 6
    # empty masks never match (IoU > 0 is required even with threshold 0); > 1 disables
    ids, _ = stitch_ids(new, torch.tensor([4, 5]), new, 0.0, 6)
    assert ids.tolist() == [4, 6]
    ids, _ = stitch_ids(new, torch.tensor([4, 5]), new, 1.01, 6)
    assert ids.tolist() == [6, 7]


# ---------------------------------------------------------------- stock proposer


def test_stock_proposer_shares_encoder_features(predictor, frames):
    proposer = StockProposer(predictor, PARAMS)
    fresh = proposer.propose(frames[0])
    assert isinstance(fresh, Proposals) and len(fresh) > 1
    assert fresh.masks.dtype == torch.bool and tuple(fresh.masks.shape[1:]) == (H, W)
    assert bool((fresh.predicted_iou[:-1] >= fresh.predicted_iou[1:]).all())
    assert set(fresh.timings) == {"encoder", "decoder+postprocess"}
    with torch.inference_mode():
        backbone_out = predictor.forward_image(preprocess_frame(frames[0], predictor.image_size))
    shared = proposer.propose(frames[0], backbone_out=backbone_out)
    assert torch.equal(shared.masks, fresh.masks)
    assert torch.equal(shared.predicted_iou, fresh.predicted_iou)
    assert torch.equal(shared.stability, fresh.stability)


# ---------------------------------------------------------------- in-memory video state


def test_in_memory_state_matches_jpeg_folder(predictor, frames, tmp_path):
    num = 5
    for i in range(num):
        Image.fromarray(frames[i].numpy()).save(tmp_path / f"{i:05d}.jpg", quality=100)
    decoded = torch.from_numpy(
        np.stack([np.array(Image.open(tmp_path / f"{i:05d}.jpg").convert("RGB")) for i in range(num)])
    )
    masks = [_box(10, 40, 20, 60, (H, W)), _box(30, 60, 50, 90, (H, W))]

    reference_state = predictor.init_state(str(tmp_path))
    for k, mask in enumerate(masks):
        predictor.add_new_mask(reference_state, 0, k + 1, mask)
    reference = {f: m.clone() for f, _, m in predictor.propagate_in_video(reference_state)}

    # Streamed: one frame at a time, nominal length fixed up front.
    state = init_state_from_frames(predictor, decoded[:1], resize="pil", num_frames=num)
    for k, mask in enumerate(masks):
        add_mask_prompt(predictor, state, 0, k + 1, mask)
    predictor.propagate_in_video_preflight(state)
    for f in range(num):
        if f:
            append_frames(predictor, state, decoded[f : f + 1])
        logits = track_frame(predictor, state, f)
        # Same inputs, same ops: bit-identical (tolerance 0).
        assert torch.equal(logits, reference[f]), f"frame {f}"
    assert (reference[num - 1] > 0).any()  # non-trivial propagation
    assert all(image is None for image in state["images"])  # images dropped once encoded


# ---------------------------------------------------------------- sources


def test_video_source_maps_ids_and_encoder_once(whole_run):
    segments, table, windows, encoder_calls = whole_run
    assert segments.dtype == torch.int32 and tuple(segments.shape) == (T, H, W)
    present = set(segments.unique().tolist()) - {0}
    assert present and present <= set(table.id.tolist())
    assert encoder_calls == T  # one encoder pass per frame (keyframes shared)
    assert len(windows) == 3  # frames 0-3, 4-7, 8
    seen_max = 0
    stitched = 0
    for k, ids in enumerate(windows):
        assert 0 < len(ids) <= 4 and len(set(ids)) == len(ids)
        window_maps = segments[4 * k : 4 * k + 4]
        assert set(window_maps.unique().tolist()) - {0} <= set(ids)
        previous = set(windows[k - 1]) if k else set()
        for masklet in ids:
            if masklet in previous:
                stitched += 1
            else:
                assert masklet > seen_max  # new ids are fresh and increasing
        seen_max = max(seen_max, max(ids))
    assert stitched > 0  # some masklets continue across windows
    # scores came from the proposals
    assert not np.isnan(table.predicted_iou).any() and not np.isnan(table.stability).any()


def test_video_source_chunking_invariance(video_source, frames, whole_run):
    whole, table_whole, windows, _ = whole_run
    chunked, table_chunked = _run(video_source, frames, chunk=3)  # windows of 4 straddle chunks
    assert torch.equal(whole, chunked)
    assert table_whole.to_json() == table_chunked.to_json()
    assert video_source.window_ids == windows


class FixedProposer:
    """Proposes the same three boxes on every frame (slightly jittered)."""

    def __init__(self, params: ProposalParams) -> None:
        self.params = params
        self.calls = 0

    def propose(self, image, backbone_out=None):
        self.calls += 1
        assert backbone_out is not None
        shift = self.calls % 2
        masks = torch.stack(
            [
                _box(0, 32, 0 + shift, 48, (H, W)),
                _box(32, 64, 48, 96 - shift, (H, W)),
                _box(0, 10, 60 + 20 * shift, 70 + 20 * shift, (H, W)),  # jumps: never stitched
            ]
        )
        return Proposals(masks, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.95, 0.9, 0.85]))


def test_frame_source_stitches_frame_to_frame(frames):
    source = SAM2FrameSource(TINY_TEST_CONFIG, None, proposal=PARAMS, stitch_iou=0.5)
    assert source.window == 1 and source.name == "sam2_frame"
    source._proposer = FixedProposer(PARAMS)
    segments, table = _run(source, frames[:4], chunk=3)
    # boxes 1 and 2 keep ids 1 and 2; box 3 gets a new id on every frame
    assert segments[:, 5, 5].tolist() == [1, 1, 1, 1]
    assert segments[:, 50, 50].tolist() == [2, 2, 2, 2]
    assert int(segments[0, 5, 85]) == 3 and int(segments[1, 5, 65]) == 4 and int(segments[2, 5, 85]) == 5
    assert table.id.tolist() == [1, 2, 3, 4, 5, 6]
    assert source._state is None  # window=1: no video predictor state


def test_frame_source_with_stock_proposer(frames):
    source = SAM2FrameSource(TINY_TEST_CONFIG, None, proposal=PARAMS, max_objects=5, order="score")
    segments, table = _run(source, frames[:3], chunk=2)
    assert segments.dtype == torch.int32 and tuple(segments.shape) == (3, H, W)
    assert set(segments.unique().tolist()) - {0} <= set(table.id.tolist())
    assert len(table) <= 15


def test_bf16_cpu_smoke(frames):
    source = SAM2VideoSource(TINY_TEST_CONFIG, None, window=2, proposal=PARAMS, max_objects=3, bf16=True)
    segments, _ = _run(source, frames[:3], chunk=3)
    assert segments.dtype == torch.int32 and tuple(segments.shape) == (3, H, W)


def test_wrong_order_chunk(frames):
    source = SAM2VideoSource(TINY_TEST_CONFIG, None, window=2, proposal=PARAMS, max_objects=2)
    source.begin_video("clip", H, W)
    with pytest.raises(ValueError, match="expected next"):
        source.add_chunk(frames[2:4], 2)
    source.add_chunk(frames[:2], 0)
    with pytest.raises(ValueError, match="expected next"):
        source.add_chunk(frames[3:4], 3)


def test_config_changes_with_parameters(tmp_path):
    base = SAM2VideoSource(TINY_TEST_CONFIG, None, proposal=PARAMS).config()
    json.dumps(base)  # serialisable (cache key)
    assert base["proposal"]["points_per_side"] == 4
    changed = SAM2VideoSource(
        TINY_TEST_CONFIG, None, proposal=ProposalParams(**{**PARAMS.__dict__, "pred_iou_thresh": 0.1})
    ).config()
    assert changed != base
    same = SAM2VideoSource(
        TINY_TEST_CONFIG, None, proposal=ProposalParams(**{**PARAMS.__dict__, "points_per_batch": 7})
    )
    assert same.config() == base  # batch size does not change the output
    for kwargs in (
        {"window": 8},
        {"stitch_iou": 0.7},
        {"order": "score"},
        {"max_objects": 5},
        {"bf16": True},
        {"image_size": 256},
    ):
        assert SAM2VideoSource(TINY_TEST_CONFIG, None, proposal=PARAMS, **kwargs).config() != base
    assert SAM2FrameSource(TINY_TEST_CONFIG, None, proposal=PARAMS).config() != base
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"x" * 100)
    first = SAM2VideoSource(TINY_TEST_CONFIG, str(ckpt)).config()["checkpoint"]
    ckpt.write_bytes(b"y" * 100)
    assert SAM2VideoSource(TINY_TEST_CONFIG, str(ckpt)).config()["checkpoint"] != first
    with pytest.raises(ValueError):
        SAM2VideoSource(TINY_TEST_CONFIG, None, proposer="magic")
