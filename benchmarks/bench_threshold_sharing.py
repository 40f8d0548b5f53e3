"""Benchmark: a predicted-IoU threshold sweep with ``FastProposer.propose_many`` vs one ``propose`` per value.

Usage::

    python benchmarks/bench_threshold_sharing.py          # tiny @256 (16² points), Hiera-T @1024 (8² points)
    python benchmarks/bench_threshold_sharing.py --models tiny --repeat 3
    python benchmarks/bench_threshold_sharing.py --models hiera --hiera-points 16

On one synthetic 480×853 frame, for each model (random weights, mask logits sharpened as
``bench_proposals.py`` does, thresholds of ``random_weight_params`` except the swept
``pred_iou_thresh``):

* **shared**: one ``propose_many(frame, sweep)`` call (it encodes the frame itself; its
  encoder seconds are reported apart, so "shared, encoded once" is the same call less them);
* **separate, encoded once**: one ``FastProposer(model, value).propose(frame, backbone_out)``
  per value with the shared ``backbone_out`` (what the sharing saves past the encoder);
* **separate, each encodes**: one ``propose(frame)`` per value, as a user running the values
  one after another would.

Each value's masks, predicted IoUs and stability scores of all three runs must be identical
(``torch.equal``); the bench fails otherwise. Printed: the sweep's per-value counts
(candidates, after the IoU filter, after stability, kept), wall-clock seconds and ratios,
and where the time goes (``Proposals.timings``: decode = prompt encoding + mask decoding,
upsample = bilinear upsampling of the candidates, candidates = stability / threshold / boxes /
packing, nms = each value's own selection, NMS and mask gather). A random model's predicted
IoUs lie in a narrow band (≈ 0.46–0.55), so the default sweep values are near the quartiles of
each model's band (``--values`` overrides them for both models).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_proposals import make_frame  # noqa: E402

from vssam2.masklets.fast_proposer import FastProposer  # noqa: E402
from vssam2.masklets.proposals import ProposalParams, Proposals  # noqa: E402
from vssam2.masklets.random_weights import random_weight_params, sharpen_masks  # noqa: E402
from vssam2.masklets.sam2_model import TINY_TEST_CONFIG, load_sam2  # noqa: E402

# model name: (config, image size, default sweep values near the quartiles of its predicted IoUs,
# default torch threads)
MODELS = {
    "tiny": (TINY_TEST_CONFIG, 256, (0.488, 0.491, 0.494, 0.496), 1),
    "hiera": ("configs/sam2.1/sam2.1_hiera_t.yaml", 1024, (0.471, 0.477, 0.507, 0.531), 2),
}
STAGES = ("encoder", "decoder", "upsample", "candidates", "nms")


def same(a: Proposals, b: Proposals) -> bool:
    """Bit-identical proposals."""
    return (
        torch.equal(a.masks, b.masks)
        and torch.equal(a.predicted_iou, b.predicted_iou)
        and torch.equal(a.stability, b.stability)
    )


def stage_sums(results: list[Proposals], shared: bool) -> dict[str, float]:
    """Seconds per stage of a run: shared stages counted once when ``shared`` (propose_many puts
    them in every result), each result's own otherwise; ``nms`` is always each value's own."""
    out = {}
    for stage in STAGES:
        values = [r.timings[stage] for r in results]
        out[stage] = values[0] if shared and stage != "nms" else sum(values)
    return out


def run_model(name: str, points: int, values: tuple[float, ...], repeat: int, height: int, width: int) -> dict:
    """The three runs (best of ``repeat`` wall clock each) on one model; raises if they differ."""
    config, size = MODELS[name][:2]
    torch.manual_seed(0)
    model = load_sam2(config, None, image_size=size)
    sharpen_masks(model, 30.0)
    frame = torch.from_numpy(make_frame(height, width))
    sweep = [ProposalParams(**{**random_weight_params(points).__dict__, "pred_iou_thresh": v}) for v in values]
    proposer = FastProposer(model, sweep[0])
    separate = [FastProposer(model, p) for p in sweep]

    best: dict[str, tuple[float, list[Proposals]]] = {}

    def timed(key: str, fn) -> None:
        t0 = time.perf_counter()
        results = fn()
        seconds = time.perf_counter() - t0
        if key not in best or seconds < best[key][0]:
            best[key] = seconds, results

    separate[0].propose(frame)  # warm-up (first-call costs: thread pools, lazy imports, allocator)
    for _ in range(repeat):
        timed("shared", lambda: proposer.propose_many(frame, sweep))
        backbone_out = proposer.encode(frame)
        timed("separate_once", lambda bo=backbone_out: [fp.propose(frame, bo) for fp in separate])
        timed("separate_each", lambda: [fp.propose(frame) for fp in separate])
    counts = proposer.stats_many
    shared = best["shared"][1]
    for key in ("separate_once", "separate_each"):
        for value, a, b in zip(values, shared, best[key][1]):
            if not same(a, b):
                raise AssertionError(f"{name}: pred_iou_thresh {value}: propose_many differs from {key}")
    encoder = shared[0].timings["encoder"]
    return {
        "name": name,
        "config": config,
        "size": size,
        "points": points,
        "values": values,
        "threads": torch.get_num_threads(),
        "counts": counts,
        "shared": best["shared"][0] - encoder,
        "shared_with_encoder": best["shared"][0],
        "separate_once": best["separate_once"][0],
        "separate_each": best["separate_each"][0],
        "stages": {
            "shared": stage_sums(shared, True),
            "separate_once": stage_sums(best["separate_once"][1], False),
            "separate_each": stage_sums(best["separate_each"][1], False),
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,hiera", help="comma-separated: tiny, hiera")
    ap.add_argument("--tiny-points", type=int, default=16, help="points per side, tiny model")
    ap.add_argument("--hiera-points", type=int, default=8, help="points per side, Hiera-T (16 costs 4x the decoding)")
    ap.add_argument("--values", default=None, help="comma-separated pred_iou_thresh values (both models)")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=853)
    ap.add_argument("--repeat", type=int, default=1, help="best of N wall clock per run")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch.set_num_threads for both models (default: 1 for tiny, whose many small ops "
        "oversubscribe a busy machine's cores, 2 for Hiera-T)",
    )
    args = ap.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"--models: unknown {unknown}; choose from {sorted(MODELS)}")
    rows = []
    for name in names:
        points = args.tiny_points if name == "tiny" else args.hiera_points
        torch.set_num_threads(args.threads or MODELS[name][3])
        values = tuple(float(v) for v in args.values.split(",")) if args.values else MODELS[name][2]
        rows.append(run_model(name, points, values, args.repeat, args.height, args.width))
    threads = ", ".join(f"{r['name']} {r['threads']}" for r in rows)
    print(
        f"frame {args.height}x{args.width}, torch threads {threads}, best of {args.repeat}; "
        "every value's proposals identical in the three runs"
    )

    print("\n| model | points | pred_iou_thresh | candidates | after IoU | after stability | kept |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        for value, c in zip(r["values"], r["counts"]):
            model = f"{r['name']} @{r['size']}"
            print(
                f"| {model} | {r['points']}² | {value} | {c['candidates']} | {c['after_iou']} | "
                f"{c['after_stability']} | {c['kept']} |"
            )

    print(
        "\n| model | shared, encoded once s | separate, encoded once s | ratio | "
        "shared incl. encoder s | separate, each encodes s | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} @{r['size']}, {r['points']}² | {r['shared']:.3f} | {r['separate_once']:.3f} | "
            f"{r['separate_once'] / r['shared']:.2f}× | {r['shared_with_encoder']:.3f} | {r['separate_each']:.3f} | "
            f"{r['separate_each'] / r['shared_with_encoder']:.2f}× |"
        )

    print("\n| model | run | " + " | ".join(f"{s} s" for s in STAGES) + " |")
    print("|---|---|" + "---:|" * len(STAGES))
    for r in rows:
        for run, stages in r["stages"].items():
            print(f"| {r['name']} @{r['size']} | {run} | " + " | ".join(f"{stages[s]:.3f}" for s in STAGES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
