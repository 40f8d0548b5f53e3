"""SourceSet: the values of a sweep over one video in one pass give exactly the maps and tables
of each value run on its own, with one encoder pass per frame and one prompt decoding per
keyframe (tiny random SAM2, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vssam2.masklets.proposals import ProposalParams
from vssam2.masklets.random_weights import keep_objects, sharpen_masks
from vssam2.masklets.sam2_model import TINY_TEST_CONFIG, load_sam2_video_predictor
from vssam2.masklets.sam2_video import OwnWork, SAM2VideoSource
from vssam2.masklets.sharing import SharedFrameWork, SourceSet
from vssam2.masklets.superpixel import SuperpixelSource
from vssam2.synthetic import SyntheticConfig, generate_video

H, W, T = 64, 96, 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # many small ops (conftest.one_thread)


@pytest.fixture(scope="module")
def predictor():
    """A tiny random SAM2 whose masks are sharp and whose objects persist (see random_weights)."""
    torch.manual_seed(0)
    predictor = load_sam2_video_predictor(TINY_TEST_CONFIG, None)
    keep_objects(predictor, 10.0)
    sharpen_masks(predictor, 30.0)
    return predictor


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.from_numpy(generate_video(np.random.default_rng(1), SyntheticConfig(height=H, width=W), T).frames)


def make(predictor, window: int = 4, proposer: str = "fast", **params) -> SAM2VideoSource:
    proposal = ProposalParams(
        **{"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 0.9, **params}
    )
    source = SAM2VideoSource(
        TINY_TEST_CONFIG, None, window=window, proposal=proposal, proposer=proposer, max_objects=6, stitch_iou=0.3
    )
    source._predictor = predictor
    return source


class EncoderCount:
    """Counts the model's image-encoder passes (wraps ``forward_image`` on the instance)."""

    def __init__(self, predictor) -> None:
        self.predictor, self.calls = predictor, 0
        original = type(predictor).forward_image

        def counting(*args, **kwargs):
            self.calls += 1
            return original(predictor, *args, **kwargs)

        predictor.forward_image = counting

    def __enter__(self) -> EncoderCount:
        return self

    def __exit__(self, *exc) -> None:
        del self.predictor.forward_image


def alone(source, frames: torch.Tensor, chunk: int = 4):
    source.work = OwnWork()
    source.begin_video("clip", H, W)
    maps = torch.cat([source.add_chunk(frames[s : s + chunk], s) for s in range(0, T, chunk)])
    return maps, source.end_video().to_json()


def together(sources, frames: torch.Tensor, chunk: int = 3):
    shared = SourceSet(sources)
    shared.begin_video("clip", H, W)
    parts = [shared.add_chunk(frames[s : s + chunk], s) for s in range(0, T, chunk)]
    tables = [table.to_json() for table in shared.end_video()]
    maps = [torch.cat([part[k] for part in parts]) for k in range(len(sources))]
    works = list(shared.works)
    shared.release()
    return maps, tables, works


def test_threshold_sweep_shares_encoder_and_decoding(predictor, frames):
    values = [0.0, 0.6, 0.8]
    references = [alone(make(predictor, pred_iou_thresh=v), frames) for v in values]
    sizes = [len(set(torch.unique(maps).tolist()) - {0}) for maps, _ in references]
    assert len(set(sizes)) > 1, f"the thresholds must change the masklets: {sizes}"
    with EncoderCount(predictor) as count:
        maps, tables, works = together([make(predictor, pred_iou_thresh=v) for v in values], frames)
    for k, (ref_maps, ref_table) in enumerate(references):
        assert torch.equal(maps[k], ref_maps), f"value {values[k]}"
        assert tables[k] == ref_table
    (work,) = works
    assert count.calls == work.encoder_passes == T  # one encoder pass per frame for all values
    assert work.decodes == 2  # keyframes 0 and 4: one decoding each for all values


def test_window_sweep_shares_the_encoder(predictor, frames):
    windows = [1, 4]
    references = [alone(make(predictor, window=w), frames) for w in windows]
    with EncoderCount(predictor) as count:
        maps, tables, works = together([make(predictor, window=w) for w in windows], frames)
    for k, (ref_maps, ref_table) in enumerate(references):
        assert torch.equal(maps[k], ref_maps), f"window {windows[k]}"
        assert tables[k] == ref_table
    assert count.calls == works[0].encoder_passes == T
    # a frame that is a keyframe of several windows is decoded once
    keyframes = {t: [w for w in windows if t % w == 0] for t in range(T)}
    assert works[0].decodes == sum(1 for t in range(T) if keyframes[t])


def test_stock_proposer_shares_the_encoder_only(predictor, frames):
    values = [0.0, 0.7]
    references = [alone(make(predictor, proposer="stock", pred_iou_thresh=v), frames) for v in values]
    stock = [make(predictor, proposer="stock", pred_iou_thresh=v) for v in values]
    maps, tables, works = together(stock, frames)
    assert all(torch.equal(m, r[0]) and t == r[1] for m, t, r in zip(maps, tables, references))
    assert works[0].encoder_passes == T and works[0].decodes == 2 * 2  # decoded per value


def test_other_sources_and_models_are_not_mixed(predictor, frames):
    superpixels = SuperpixelSource(n_segments=30)
    sam2 = make(predictor)
    other = SAM2VideoSource(TINY_TEST_CONFIG, None, window=4, bf16=True)  # another model key
    shared = SourceSet([superpixels, sam2, other])
    assert len(shared.works) == 2 and isinstance(sam2.work, SharedFrameWork)
    assert other.predictor is not sam2.predictor
    shared.release()
    assert isinstance(sam2.work, OwnWork)
    ref, _ = alone(SuperpixelSource(n_segments=30), frames)
    shared = SourceSet([SuperpixelSource(n_segments=30), make(predictor)])
    shared.begin_video("clip", H, W)
    maps = shared.add_chunk(frames, 0)
    shared.end_video()
    assert torch.equal(maps[0], ref)
    with pytest.raises(ValueError, match="at least one source"):
        SourceSet([])
