"""The one refine-and-score path (vssam2.scoring) on the library's own dataset class, without
Lightning: rows, pairs and counts of the report, refined rows equal to an independent vote +
metrics loop, and the errors of a misconfigured scorer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vssam2.datasets import VideoSplits
from vssam2.masklets import OracleSource
from vssam2.metrics import METRIC_NAMES, MetricConfig, VSSMetrics
from vssam2.refine import majority_vote
from vssam2.scoring import ChunkScorer, Refinement, score_stream

MODELS = ("sim_strong", "sim_boundary")


def splits(root: Path, **options) -> VideoSplits:
    pred_roots = {m: str(root / "predictions" / "vspw" / m) for m in MODELS}
    return VideoSplits(str(root / "vspw"), pred_roots=pred_roots, clip_len=7, **options)


def test_report_rows_pairs_and_refined_rows_equal_an_independent_loop(synthetic_root: Path):
    data = splits(synthetic_root)
    config = MetricConfig(boundary_width=3)
    report = score_stream(data.eval_dataset("val"), ChunkScorer(list(MODELS), config, Refinement(OracleSource())))
    assert list(report.rows) == ["sim_strong", "SAM2-sim_strong", "sim_boundary", "SAM2-sim_boundary"]
    assert report.pairs == [(m, f"SAM2-{m}") for m in MODELS]
    assert report.videos == 3 and report.frames == sum(v.num_frames for v in data.index("val").videos)
    assert report.metrics == config and report.cost["frames"] == report.frames

    base, refined, source = VSSMetrics(config), VSSMetrics(config), OracleSource()
    for chunk in data.eval_dataset("val"):
        where = {"video": chunk["video"], "start": chunk["start"], "last": chunk["last"]}
        if chunk["start"] == 0:
            source.begin_video(chunk["video"], *chunk["gt"].shape[1:])
        segments = source.add_chunk(chunk["frames"], chunk["start"], gt=chunk["gt"])
        pred = chunk["preds"]["sim_boundary"]
        base.update(pred, chunk["gt"], **where)
        refined.update(majority_vote(segments, pred), chunk["gt"], **where)
    for row, expected in (("sim_boundary", base.compute()), ("SAM2-sim_boundary", refined.compute())):
        for name in METRIC_NAMES:
            assert report.rows[row][name].item() == expected[name].item(), (row, name)
        assert torch.equal(report.rows[row]["per_class_iou"].nan_to_num(-1), expected["per_class_iou"].nan_to_num(-1))


def test_refined_rows_only_and_written_maps(synthetic_root: Path, tmp_path: Path):
    data = splits(synthetic_root, load_frames=True, max_videos=1)
    refinement = Refinement(OracleSource(), name_format="oracle-{method}", write_dir=str(tmp_path))
    report = score_stream(data.eval_dataset("val"), ChunkScorer(list(MODELS), refinement=refinement, score_base=False))
    assert list(report.rows) == ["oracle-sim_strong", "oracle-sim_boundary"] and report.pairs == []
    video = data.index("val").videos[0]
    written = sorted(p.stem for p in (tmp_path / "oracle-sim_strong" / video.name).glob("*.png"))
    assert written == sorted(video.frame_ids)


def test_misconfigured_scorers_are_refused(synthetic_root: Path):
    with pytest.raises(ValueError, match="no prediction methods"):
        ChunkScorer([])
    with pytest.raises(ValueError, match="distinct"):
        ChunkScorer(["a", "a"])
    with pytest.raises(ValueError, match=r"\{method\}"):
        Refinement(name_format="refined")
    with pytest.raises(ValueError, match="also prediction methods"):
        ChunkScorer(["a", "x-a"], refinement=Refinement(name_format="x-{method}"))
    chunk = next(iter(splits(synthetic_root, load_frames=False).eval_dataset("val")))
    with pytest.raises(KeyError, match="no predictions for"):
        ChunkScorer(["ghost"]).update(chunk, chunk["preds"])
    with pytest.raises(KeyError, match="masklet_cache"):
        ChunkScorer(list(MODELS), refinement=Refinement()).update(chunk, chunk["preds"])
    with pytest.raises(KeyError, match="load_frames"):
        ChunkScorer(list(MODELS), refinement=Refinement(OracleSource())).update(chunk, chunk["preds"])
