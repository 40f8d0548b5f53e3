"""Refinement rules, statistics and exact gains against slow references written from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vssam2.fusion.gains import action_gains, actions_to_paint, decision_confusion, joint_histogram
from vssam2.fusion.rules import MajorityVote, ProbabilityVote, QualityGate, RuleInputs
from vssam2.fusion.statistics import StatisticsConfig, candidate_classes, masklet_statistics
from vssam2.masklets.base import MaskletTable
from vssam2.metrics.functional import confusion_matrix
from vssam2.refine import count_votes, majority_vote

C = 6
IGNORE = 255


def world(seed: int = 0, t: int = 4, h: int = 12, w: int = 14, ids: int = 7):
    """Random segments / base / GT with blocky masklets, some ignore pixels on both sides."""
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, ids + 1, (t, h // 2, w // 2)).repeat(2, 1).repeat(2, 2)[:, :h, :w]
    gt = rng.integers(0, C, (t, h, w))
    base = np.where(rng.random((t, h, w)) < 0.6, gt, rng.integers(0, C, (t, h, w)))
    gt[rng.random((t, h, w)) < 0.05] = IGNORE
    base[rng.random((t, h, w)) < 0.05] = IGNORE
    return seg.astype(np.int32), base.astype(np.uint8), gt.astype(np.uint8)


def inputs_of(seg, base, table=None, probs=None, start=0) -> RuleInputs:
    counts = count_votes(torch.from_numpy(seg), torch.from_numpy(base), C, IGNORE)
    return RuleInputs(counts, C, IGNORE, seg.shape[0], start, "v", table, "table.json", probs)


def paint_reference(seg, base, paint_of_id: dict[int, int]) -> np.ndarray:
    out = base.copy()
    for masklet, cls in paint_of_id.items():
        if cls >= 0:
            out[seg == masklet] = cls
    return out


def test_majority_vote_rule_is_the_vote():
    seg, base, _ = world()
    inputs = inputs_of(seg, base)
    paint = MajorityVote(min_area=10, min_share=0.3).decide(inputs)
    refined = inputs.counts.paint(paint).reshape(base.shape)
    expected = majority_vote(torch.from_numpy(seg), torch.from_numpy(base), C, IGNORE, min_area=10, min_share=0.3)
    assert torch.equal(refined, expected)


def test_candidates_are_stable_top_k_and_the_first_is_the_vote_winner():
    votes = torch.tensor([[0, 0, 0, 0], [3, 5, 5, 0], [0, 0, 0, 2], [0, 0, 0, 0]])
    candidates, counts = candidate_classes(votes, 4, 3)
    assert candidates.tolist() == [[-1, -1, -1], [1, 2, 0], [3, -1, -1], [-1, -1, -1]]
    assert counts.tolist() == [[0, 0, 0], [5, 5, 3], [2, 0, 0], [0, 0, 0]]
    seg, base, _ = world(1)
    inputs = inputs_of(seg, base)
    stats = masklet_statistics(inputs.counts, StatisticsConfig(C), seg.shape[0], 0)
    _, votes_result = majority_vote(torch.from_numpy(seg), torch.from_numpy(base), C, IGNORE, return_votes=True)
    assert torch.equal(stats.ids, votes_result.ids)
    winner = torch.where(votes_result.applied, votes_result.winner, torch.full_like(votes_result.winner, -1))
    assert torch.equal(stats.candidates[:, 0], winner)


def test_statistics_match_a_per_masklet_reference():
    seg, base, _ = world(2)
    table = MaskletTable(
        id=np.arange(1, 8),
        predicted_iou=np.linspace(0.5, 0.9, 7),
        stability=np.full(7, np.nan),
        area=np.ones(7, np.int64),
        first_frame=np.array([0, 2, 5, 0, 1, 3, 0]),
        last_frame=np.array([9, 2, 9, 1, 8, 3, 0]),
    )
    start, frames = 2, seg.shape[0]
    stats = masklet_statistics(inputs_of(seg, base).counts, StatisticsConfig(C), frames, start, table)
    names = StatisticsConfig(C).features
    for row, masklet in enumerate(stats.ids.tolist()):
        values = base[seg == masklet].astype(np.int64)
        voting = values[values < C]
        hist = np.bincount(voting, minlength=C)
        order = sorted(range(C), key=lambda c: (-hist[c], c))
        share = [hist[c] / max(len(voting), 1) for c in order[:3]]
        p = hist / max(len(voting), 1)
        entropy = -sum(x * math.log(x) for x in p if x > 0) / math.log(C)
        i = masklet - 1
        spanned = min(table.last_frame[i], start + frames - 1) - max(table.first_frame[i], start) + 1
        spanned = int(np.clip(spanned, 1, frames))
        expected = {
            "share_1": share[0],
            "share_2": share[1],
            "margin": share[0] - share[1],
            "entropy": entropy,
            "ignore_fraction": (values >= C).mean(),
            "log_area": math.log1p(values.size),
            "area_fraction": values.size / seg.size,
            "frames_fraction": spanned / frames,
            "predicted_iou": table.predicted_iou[i],
            "has_scores": 0.0,  # stability is missing
            "class_frequency_1": (base == order[0]).sum() / base.size,
            "class_coverage_1": hist[order[0]] / (base == order[0]).sum(),
        }
        for name, value in expected.items():
            got = float(stats.features[row, names.index(name)])
            assert got == pytest.approx(value, rel=1e-5, abs=1e-6), (masklet, name)


@pytest.mark.parametrize("seed", [0, 3])
def test_gains_and_decision_confusion_are_exact(seed):
    seg, base, gt = world(seed)
    inputs = inputs_of(seg, base)
    stats = masklet_statistics(inputs.counts, StatisticsConfig(C, top_k=3), seg.shape[0], 0)
    joint = joint_histogram(torch.from_numpy(seg), torch.from_numpy(base), torch.from_numpy(gt), stats.ids)
    gains = action_gains(joint, stats.candidates, C)
    rng = np.random.default_rng(seed)
    actions = torch.from_numpy(rng.integers(0, 4, stats.ids.shape[0]))
    actions = torch.where(stats.candidates.gather(1, (actions - 1).clamp(min=0)[:, None])[:, 0] >= 0, actions, 0)
    paint = actions_to_paint(actions, stats.candidates)
    refined = paint_reference(seg, base, dict(zip(stats.ids.tolist(), paint.tolist())))
    expected = confusion_matrix(torch.from_numpy(refined), torch.from_numpy(gt), C, IGNORE)
    assert torch.equal(decision_confusion(joint, paint, C, IGNORE), expected)
    valid = gt < C
    for row, masklet in enumerate(stats.ids.tolist()):
        inside = (seg == masklet) & valid
        before = (base[inside] == gt[inside]).sum()
        assert gains[row, 0] == 0
        for j in range(3):
            cls = int(stats.candidates[row, j])
            if cls < 0:
                assert gains[row, j + 1] == float("-inf")
            else:
                assert gains[row, j + 1] == (gt[inside] == cls).sum() - before


def test_class_weighted_gains():
    seg, base, gt = world(4)
    inputs = inputs_of(seg, base)
    stats = masklet_statistics(inputs.counts, StatisticsConfig(C), seg.shape[0], 0)
    joint = joint_histogram(torch.from_numpy(seg), torch.from_numpy(base), torch.from_numpy(gt), stats.ids)
    weight = torch.arange(1, C + 1, dtype=torch.float64)
    gains = action_gains(joint, stats.candidates, C, weight)
    row, masklet = 0, int(stats.ids[0])
    inside = (seg == masklet) & (gt < C)
    cls = int(stats.candidates[row, 0])
    before = sum(weight[g] for b, g in zip(base[inside], gt[inside]) if b == g)
    after = (gt[inside] == cls).sum() * weight[cls]
    assert float(gains[row, 1]) == pytest.approx(float(after - before))


def test_quality_gate_thresholds():
    seg, base, _ = world(5)
    ids = np.arange(1, 8)
    table = MaskletTable(
        id=ids,
        predicted_iou=np.array([0.9, 0.2, 0.9, 0.9, 0.5, 0.95, 0.1]),
        stability=np.array([0.99, 0.99, 0.5, 0.99, 0.99, 0.99, 0.99]),
        area=np.ones(7, np.int64),
        first_frame=np.zeros(7, np.int64),
        last_frame=np.array([3, 3, 3, 0, 3, 3, 3]),
    )
    inputs = inputs_of(seg, base, table)
    vote = MajorityVote().decide(inputs)
    gate = QualityGate(min_predicted_iou=0.8, min_stability=0.9, min_frames=2, min_margin=0.05).decide(inputs)
    class_votes = inputs.counts.votes[:, :C]
    for masklet in ids:
        top = sorted(class_votes[masklet].tolist(), reverse=True)
        margin = (top[0] - top[1]) / max(sum(top), 1)
        i = masklet - 1
        passes = (
            table.predicted_iou[i] >= 0.8 and table.stability[i] >= 0.9 and table.last_frame[i] + 1 >= 2
        ) and margin >= 0.05
        assert int(gate[masklet]) == (int(vote[masklet]) if passes else -1), masklet


def test_quality_gate_refuses_a_table_without_the_field():
    seg, base, _ = world(6)
    nan_table = MaskletTable(
        id=np.arange(1, 8),
        predicted_iou=np.full(7, np.nan),
        stability=np.full(7, np.nan),
        area=np.ones(7, np.int64),
        first_frame=np.zeros(7, np.int64),
        last_frame=np.zeros(7, np.int64),
    )
    with pytest.raises(ValueError, match=r"'predicted_iou'.*table\.json"):
        QualityGate(min_predicted_iou=0.5).decide(inputs_of(seg, base, nan_table))
    with pytest.raises(ValueError, match="score table"):
        QualityGate(min_stability=0.5).decide(inputs_of(seg, base, None))
    # Thresholds that need no table work without one.
    QualityGate(min_share=0.5, min_area=3).decide(inputs_of(seg, base, None))


def test_probability_vote_matches_a_reference():
    from vssam2.probabilities import TopKProbs

    seg, base, _ = world(7)
    rng = np.random.default_rng(7)
    logits = torch.from_numpy(rng.normal(size=(seg.shape[0], C, *seg.shape[1:])).astype(np.float32))
    probs = TopKProbs.from_logits(logits, 3)
    inputs = inputs_of(seg, base, probs=probs)
    paint = ProbabilityVote().decide(inputs)
    classes = probs.classes.numpy().transpose(1, 0, 2, 3)  # (k, T, H, W)
    values = probs.probs.numpy().astype(np.float64).transpose(1, 0, 2, 3)
    for masklet in range(1, 8):
        inside = seg == masklet
        soft = np.zeros(C)
        for j in range(3):
            np.add.at(soft, classes[j][inside].astype(np.int64), values[j][inside])
        assert int(paint[masklet]) == int(np.argmax(soft)), masklet
    assert int(paint[0]) == -1
    with pytest.raises(ValueError, match="probabilities"):
        ProbabilityVote().decide(inputs_of(seg, base))


def test_rule_parameters_are_checked():
    with pytest.raises(ValueError, match="min_share"):
        MajorityVote(min_share=1.5)
    with pytest.raises(ValueError, match="min_margin"):
        QualityGate(min_margin=-0.1)
    with pytest.raises(ValueError, match="min_frames"):
        QualityGate(min_frames=-1)
