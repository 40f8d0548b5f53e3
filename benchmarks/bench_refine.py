"""Benchmark: majority-vote refinement (vssam2.refine.majority_vote) vs. the per-mask loop of
public refiners (for each mask: bincount of the base classes inside it, paint the winner).

    python benchmarks/bench_refine.py [--height 480 --width 853 --frames 16 --masklets 50 200 --repeat 3]

Prints seconds, frames/s and the speed-up for each masklet count, measured in the same run on
the same data, and checks that both give identical refined maps (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vssam2.refine import majority_vote  # noqa: E402

NUM_CLASSES = 124
IGNORE = 255


def make_data(frames: int, height: int, width: int, masklets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Segment maps of `masklets` Voronoi cells (some pixels uncovered) and a blocky base prediction."""
    rng = np.random.default_rng(seed)
    centres = rng.random((masklets, 2)) * (height, width)
    yy, xx = np.mgrid[:height, :width]
    dist = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
    cells = dist.argmin(axis=0) + 1  # (H, W) ids 1..masklets
    seg = np.repeat(cells[None], frames, axis=0).astype(np.int32)
    seg[:, : height // 10] = 0  # a band without masklets
    block = rng.integers(0, NUM_CLASSES, size=(frames, height // 16 + 1, width // 16 + 1))
    base = np.repeat(np.repeat(block, 16, 1), 16, 2)[:, :height, :width].astype(np.uint8)
    base[rng.random(base.shape) < 0.02] = IGNORE
    return seg, base


def per_mask_loop(seg: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The public refiners' way: one full-frame comparison and bincount per masklet."""
    out = base.copy()
    for masklet in np.unique(seg):
        if masklet == 0:
            continue
        inside = seg == masklet
        labels = base[inside]
        labels = labels[labels != IGNORE]
        if len(labels):
            out[inside] = np.bincount(labels, minlength=NUM_CLASSES).argmax()
    return out


def best_of(repeat: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=853)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--masklets", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    print("## Majority vote: vssam2 vs. per-mask loop\n")
    print(f"- machine: {platform.machine()}, cores={torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"- data: {args.frames} frames of {args.height}×{args.width}, {NUM_CLASSES} classes, best of {args.repeat}\n")
    print("| masklets | per-mask loop s | frames/s | ours s | frames/s | speed-up | identical |")
    print("|---:|---:|---:|---:|---:|---:|:--|")
    ok = True
    for count in args.masklets:
        seg, base = make_data(args.frames, args.height, args.width, count)
        seg_t, base_t = torch.from_numpy(seg), torch.from_numpy(base)
        majority_vote(seg_t, base_t)  # warm-up
        loop_s, expected = best_of(args.repeat, lambda seg=seg, base=base: per_mask_loop(seg, base))
        ours_s, got = best_of(args.repeat, lambda seg_t=seg_t, base_t=base_t: majority_vote(seg_t, base_t))
        same = bool(np.array_equal(got.numpy(), expected))
        ok &= same
        print(
            f"| {count} | {loop_s:.3f} | {args.frames / loop_s:.1f} | {ours_s:.3f} | {args.frames / ours_s:.1f} "
            f"| {loop_s / ours_s:.1f}× | {'yes' if same else 'NO'} |"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
