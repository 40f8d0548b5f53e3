"""Benchmark: the cost of every refinement rule against the majority vote, in one run.

    python benchmarks/bench_rules.py [--height 480 --width 853 --frames 16 --masklets 50 200 --repeat 3]

Each rule runs the whole refinement of a chunk as the scorer runs it: count the votes
(:func:`vssam2.refine.count_votes`), decide (the rule), paint. The majority vote is the
reference; the quality gate reads a score table, the probability vote top-3 probabilities,
the learned rule a FusionNet (random weights: the cost does not depend on them). Prints, per
masklet count, the decision alone, the whole refinement of a chunk (interleaved repeats, best
of each), frames/s and the ratio to the vote — measured, and composed as the vote's count +
paint plus the rule's decision (the part that differs, and the steadier figure on a shared
machine).
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_refine import best_of, make_data  # noqa: E402

from vssam2.fusion import FusionNet, LearnedFusion, MajorityVote, ProbabilityVote, QualityGate  # noqa: E402
from vssam2.fusion.rules import RefinementRule, RuleInputs  # noqa: E402
from vssam2.fusion.statistics import StatisticsConfig  # noqa: E402
from vssam2.label_kernels import AVAILABLE  # noqa: E402
from vssam2.masklets.base import MaskletTable  # noqa: E402
from vssam2.probabilities import TopKProbs  # noqa: E402
from vssam2.refine import count_votes  # noqa: E402

NUM_CLASSES = 124
IGNORE = 255


def refine(seg: torch.Tensor, base: torch.Tensor, rule: RefinementRule, table: MaskletTable, probs: TopKProbs):
    """One chunk through count → decide → paint, as :meth:`vssam2.scoring.Refinement.refine` runs it."""
    counts = count_votes(seg, base, NUM_CLASSES, IGNORE)
    inputs = RuleInputs(counts, NUM_CLASSES, IGNORE, int(base.shape[0]), 0, "bench", table, "bench", probs)
    return counts.paint(rule.decide(inputs)).reshape(base.shape)


def decide_fresh(rule: RefinementRule, counts: Any, frames: int, table: MaskletTable, probs: TopKProbs) -> torch.Tensor:
    """One decision on fresh inputs: what RuleInputs caches (summed probabilities) is part of the cost."""
    return rule.decide(RuleInputs(counts, NUM_CLASSES, IGNORE, frames, 0, "bench", table, "bench", probs))


def fake_probs(base: np.ndarray, seed: int = 0) -> TopKProbs:
    """Top-3 probabilities whose first class is the base id."""
    rng = np.random.default_rng(seed)
    t, h, w = base.shape
    classes = np.stack([np.where(base == IGNORE, 0, base), (base + 1) % NUM_CLASSES, (base + 2) % NUM_CLASSES], 1)
    top = rng.uniform(0.5, 0.9, (t, 1, h, w))
    probs = np.concatenate([top, (1 - top) * 0.6, (1 - top) * 0.3], axis=1)
    return TopKProbs(torch.from_numpy(classes.astype(np.uint8)), torch.from_numpy(probs.astype(np.float16)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=853)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--masklets", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(
        f"{args.frames} frames of {args.height}x{args.width}, {NUM_CLASSES} classes; best of {args.repeat}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, compiled kernels {AVAILABLE}, "
        f"{platform.processor() or platform.machine()}"
    )
    statistics = StatisticsConfig(NUM_CLASSES)
    net = FusionNet(len(statistics.features), NUM_CLASSES, statistics.top_k)
    rules: dict[str, RefinementRule] = {
        "vote": MajorityVote(),
        "gate": QualityGate(min_share=0.5, min_margin=0.1, min_frames=2, min_predicted_iou=0.7, min_stability=0.9),
        "prob_vote": ProbabilityVote(),
        "learned": LearnedFusion(net=net, statistics=statistics),
    }
    print("| masklets | rule | decide ms | refine ms / chunk | frames/s | × vote (measured) | × vote (composed) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for masklets in args.masklets:
        seg_np, base_np = make_data(args.frames, args.height, args.width, masklets)
        seg, base = torch.from_numpy(seg_np), torch.from_numpy(base_np)
        ids = np.arange(1, masklets + 1)
        table = MaskletTable(
            id=ids,
            predicted_iou=np.linspace(0.5, 1.0, masklets),
            stability=np.linspace(0.8, 1.0, masklets),
            area=np.ones(masklets, np.int64),
            first_frame=np.zeros(masklets, np.int64),
            last_frame=np.full(masklets, args.frames - 1, np.int64),
        )
        probs = fake_probs(base_np)
        runs = {name: functools.partial(refine, seg, base, rule, table, probs) for name, rule in rules.items()}
        for run in runs.values():
            run()  # warm-up
        # Interleaved repeats, best of each: every rule sees the same machine state.
        seconds = {name: float("inf") for name in runs}
        for _ in range(args.repeat):
            for name, run in runs.items():
                seconds[name] = min(seconds[name], best_of(1, run)[0])
        # The decision alone, on the same vote histogram (what a rule adds to the vote's count + paint).
        counts = count_votes(seg, base, NUM_CLASSES, IGNORE)
        decide = {}
        for name, rule in rules.items():
            once = functools.partial(decide_fresh, rule, counts, args.frames, table, probs)
            once()
            decide[name] = best_of(args.repeat, once)[0]
        for name, value in seconds.items():
            # The vote's count and paint are shared by every rule; only the decision differs.
            composed = (seconds["vote"] - decide["vote"] + decide[name]) / seconds["vote"]
            print(
                f"| {masklets} | {name} | {decide[name] * 1e3:.2f} | {value * 1e3:.1f} | {args.frames / value:.0f} | "
                f"{value / seconds['vote']:.2f} | {composed:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
