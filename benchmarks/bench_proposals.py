"""Benchmark: sam2's SAM2AutomaticMaskGenerator (stock) vs vssam2's FastProposer, same model and frame.

Usage::

    python benchmarks/bench_proposals.py                 # tiny random model at 256, 96x160... frame, 16x16 points
    python benchmarks/bench_proposals.py --full          # Hiera-T (sam2.1) random weights at 1024, 480x853 frame
    python benchmarks/bench_proposals.py --full --bf16 --threads 2 --repeat 2

Prints per-stage seconds (encoder, decoder, postprocess, total) of both, the speed-up, the
number of kept masks of each and the agreement: fraction of stock masks matched by a fast
mask with mask IoU >= 0.9, matched-mask IoU mean / min, max |predicted IoU| difference.

Stock stages are measured with hooks: encoder = ``predictor.set_image``, decoder = the
``sam_mask_decoder`` forward (prompt encoding excluded, ~0), postprocess = the rest
(upsampling every candidate, stability, boxes, RLE, NMS, RLE decoding).

Random weights give noise-like masks: by default the hypernetwork output layer is scaled by
``--hyper-scale 30`` and low thresholds are used (predicted IoU 0, stability 0.5 with offset
0.5, NMS 1.0) so that many masks survive; ``--study-params`` uses the study's parameters
(0.6 / 0.8 / 0.9 / 0.7) instead. On a loaded machine small CPU ops suffer from thread
oversubscription: use ``--threads`` (torch.set_num_threads) for stable numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vssam2.masklets.fast_proposer import FastProposer  # noqa: E402
from vssam2.masklets.proposals import ProposalParams  # noqa: E402
from vssam2.masklets.random_weights import random_weight_params, sharpen_masks  # noqa: E402
from vssam2.masklets.sam2_model import TINY_TEST_CONFIG, load_sam2  # noqa: E402
from vssam2.masklets.stock_proposer import sam2_generator  # noqa: E402


def make_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A synthetic RGB frame: coloured discs and rectangles on a background, light noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = (40, 80, 120)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(8):
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        r = rng.integers(height // 10, height // 3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
    for _ in range(4):
        y0, x0 = rng.integers(0, height - 10), rng.integers(0, width - 10)
        img[y0 : y0 + rng.integers(10, height // 2), x0 : x0 + rng.integers(10, width // 2)] = rng.integers(0, 255, 3)
    return (img + rng.integers(0, 20, img.shape)).clip(0, 255).astype(np.uint8)


def run_stock(model, params: ProposalParams, frame: np.ndarray):
    """sam2's generator with per-stage timings (hooks)."""
    gen = sam2_generator(model, params)
    times = {"encoder": 0.0, "decoder": 0.0}
    set_image = gen.predictor.set_image

    def timed_set_image(img):
        t0 = time.perf_counter()
        set_image(img)
        times["encoder"] += time.perf_counter() - t0

    gen.predictor.set_image = timed_set_image
    start = {}
    h1 = model.sam_mask_decoder.register_forward_pre_hook(lambda *a: start.__setitem__("t", time.perf_counter()))
    h2 = model.sam_mask_decoder.register_forward_hook(
        lambda *a: times.__setitem__("decoder", times["decoder"] + time.perf_counter() - start["t"])
    )
    try:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            anns = gen.generate(frame)
        total = time.perf_counter() - t0
    finally:
        h1.remove()
        h2.remove()
    times["postprocess"] = total - times["encoder"] - times["decoder"]
    times["total"] = total
    masks = (
        torch.from_numpy(np.stack([a["segmentation"] for a in anns]))
        if anns
        else torch.zeros(0, *frame.shape[:2], dtype=torch.bool)
    )
    return (masks, torch.tensor([a["predicted_iou"] for a in anns])), times, None


def run_fast(model, params, frame, **kw):
    fp = FastProposer(model, params, **kw)
    t0 = time.perf_counter()
    prop = fp.propose(torch.from_numpy(frame))
    times = dict(prop.timings)
    times["total"] = time.perf_counter() - t0
    return prop, times, fp.stats


def agreement(ref_masks, ref_iou, prop) -> str:
    if len(ref_masks) == 0 or len(prop) == 0:
        return f"stock {len(ref_masks)} masks, fast {len(prop)} masks (nothing to match)"
    a = ref_masks.flatten(1).float()
    b = prop.masks.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    best, idx = (inter / union.clamp(min=1)).max(dim=1)
    diou = (prop.predicted_iou[idx] - ref_iou).abs().max().item()
    return (
        f"stock {len(ref_masks)} masks, fast {len(prop)} masks; matched (IoU>=0.9) "
        f"{int((best >= 0.9).sum())}/{len(ref_masks)}; matched IoU mean {best.mean():.5f} min {best.min():.5f}; "
        f"max |pred IoU diff| {diou:.2e}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="Hiera-T random weights at 1024 on a 480x853 frame")
    ap.add_argument("--config", default=None)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--points", type=int, default=16, help="points per side")
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--hyper-scale", type=float, default=30.0)
    ap.add_argument("--study-params", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="also run FastProposer with bf16 autocast")
    ap.add_argument("--skip-covered", action="store_true", help="also run FastProposer with skip_covered")
    ap.add_argument("--lowres-stability", action="store_true", help="also run with lowres_stability")
    ap.add_argument("--no-stock", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="best of N (per-stage of the fastest total)")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    config = args.config or ("configs/sam2.1/sam2.1_hiera_t.yaml" if args.full else TINY_TEST_CONFIG)
    size = args.image_size or (1024 if args.full else 256)
    height = args.height or (480 if args.full else 120)
    width = args.width or (853 if args.full else 200)
    torch.manual_seed(0)
    model = load_sam2(config, None, image_size=size)
    if args.hyper_scale != 1.0:
        sharpen_masks(model, args.hyper_scale)
    if args.study_params:
        params = ProposalParams(points_per_side=args.points, points_per_batch=args.points_per_batch)
    else:
        params = random_weight_params(args.points, args.points_per_batch)
    frame = make_frame(height, width)
    print(
        f"model {config} @ {size}, frame {height}x{width}, {args.points}x{args.points} points, "
        f"threads {torch.get_num_threads()}, params {params}"
    )

    def best_of(fn):
        runs = [fn() for _ in range(args.repeat)]
        shares = [r[1]["postprocess"] / max(r[1]["decoder"], 1e-9) for r in runs]
        pooled = sum(r[1]["postprocess"] for r in runs) / max(sum(r[1]["decoder"] for r in runs), 1e-9)
        best = min(runs, key=lambda r: r[1]["total"])
        best[1]["shares"] = (pooled, min(shares), max(shares))
        return best

    rows = []
    stock = None
    if not args.no_stock:
        stock, s_t, _ = best_of(lambda: run_stock(model, params, frame))
        rows.append(("stock (sam2)", s_t, ""))
    variants = [("fast", {})]
    if args.lowres_stability:
        variants.append(("fast lowres-stability", {"lowres_stability": True}))
    if args.bf16:
        variants.append(("fast bf16", {"bf16": True}))
    if args.skip_covered:
        variants.append(("fast skip-covered", {"skip_covered": True}))
    for name, kw in variants:
        prop, t, stats = best_of(lambda kw=kw: run_fast(model, params, frame, **kw))
        agree = agreement(*stock, prop) if stock else f"{len(prop)} masks"
        rows.append((name, t, f"{agree}; decoded {stats['decoded']}/{stats['points']} prompts"))

    # post/decoder: of the fastest run (whose stages are shown); pooled: summed post-processing
    # over summed decoding of all --repeat runs, with the range of the per-run shares.
    print(
        f"\n| proposer | encoder s | decoder s | postprocess s | total s | post/decoder | "
        f"post/decoder, {args.repeat} runs pooled (range) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ref_total = rows[0][1]["total"]
    for name, t, _ in rows:
        pooled, low, high = t["shares"]
        print(
            f"| {name} | {t['encoder']:.3f} | {t['decoder']:.3f} | {t['postprocess']:.3f} | {t['total']:.3f} | "
            f"{t['postprocess'] / max(t['decoder'], 1e-9):.1%} | {pooled:.1%} ({low:.1%}–{high:.1%}) | "
            f"{ref_total / t['total']:.2f}x |"
        )
    if stock is not None:
        s_dec = rows[0][1]["decoder"]
        for name, t, _ in rows[1:]:
            print(f"decoder speed-up {name}: {s_dec / t['decoder']:.2f}x")
    print()
    for name, _, note in rows[1:]:
        print(f"{name}: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
