"""Benchmark: I-SAM2's masklets and feature cache in one pass vs two passes.

Usage::

    python benchmarks/bench_one_pass.py                 # tiny random model @128, 2 videos of 16 frames 120x216, W=8
    python benchmarks/bench_one_pass.py --config sam2.1-tiny --image-size 1024 --videos 1 --frames 3 \\
        --height 480 --width 853 --window 3 --max-objects 4 --points 8     # Hiera-T random weights @1024

Both routes run the library's own functions on the same synthetic train split, the same
source object (model built before timing) and the same torch thread count, each into fresh
cache folders:

- **two passes**: ``compute_cache`` (SAM2 masklets), then ``compute_feature_cache`` with the
  equivalent ``SAM2Encoder`` over the cached masklets (the second image-encoder pass over
  every frame, reading the frames and maps back; the encoder's construction is timed, as
  ``python -m vssam2.features`` pays it);
- **one pass**: ``compute_cache(..., features=OnePassFeatures(...))``: the encoder output of
  the masklet pass is pooled as it goes (building the equivalent encoder once for the cache
  key and the weight check is timed).

Reported: seconds and frames/s of each pass, the ratio of the two routes' totals, and
whether the two feature caches are the same folder with identical files (exit 1 otherwise).
Random weights: the mask decoder's hypernetwork outputs are scaled ×30, the object-score
bias set to +10 and low proposal thresholds used (``vssam2.masklets.random_weights``, as in
``bench_masklets.py``), so that proposals survive and propagation tracks objects. A warm-up
run on 2 frames of one video (untimed) comes first; ``--repeat`` runs alternate the routes
and report the best time of each stage.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from datamodules import VSPWDataModule  # noqa: E402
from vssam2.encoders import SAM2Encoder  # noqa: E402
from vssam2.features import compute_feature_cache, open_feature_cache  # noqa: E402
from vssam2.features.one_pass import OnePassFeatures  # noqa: E402
from vssam2.masklets.cache import open_cache  # noqa: E402
from vssam2.masklets.compute import compute_cache  # noqa: E402
from vssam2.masklets.random_weights import keep_objects, random_weight_params, sharpen_masks  # noqa: E402
from vssam2.masklets.sam2_model import TINY_TEST_CONFIG  # noqa: E402
from vssam2.masklets.sam2_video import SAM2VideoSource  # noqa: E402
from vssam2.synthetic import SyntheticConfig, write_synthetic  # noqa: E402


def same_files(first: Path, second: Path, split: str, videos: list[str]) -> tuple[bool, str]:
    """Whether two feature caches are the same key with identical arrays, and a line saying so."""
    if first.name != second.name:
        return False, f"different folders: {first.name} vs {second.name}"
    a, b = open_feature_cache(first), open_feature_cache(second)
    rows = 0
    for video in videos:
        left, right = a.read(split, video), b.read(split, video)
        if sorted(left) != sorted(right):
            return False, f"{video}: arrays {sorted(left)} vs {sorted(right)}"
        for name in left:
            if left[name].dtype != right[name].dtype or not np.array_equal(left[name], right[name]):
                diff = np.abs(left[name].astype(np.float64) - right[name].astype(np.float64)).max()
                return False, f"{video}: {name} differs (max abs difference {diff:.3g})"
        rows += len(left["ids"])
    return True, f"same folder {first.name}, identical files ({len(videos)} videos, {rows} masklet vectors)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=TINY_TEST_CONFIG, help="SAM2 config (random weights)")
    ap.add_argument("--image-size", type=int, default=None, help="model input size (default: the config's)")
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16, help="frames per video")
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--width", type=int, default=216)
    ap.add_argument("--clip-len", type=int, default=8, help="frames per chunk (masklets and pooled rows)")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--max-objects", type=int, default=4)
    ap.add_argument("--points", type=int, default=8, help="points per side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each route (alternating); best of each")
    ap.add_argument("--keep", type=Path, default=None, help="write the caches here instead of a temporary folder")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    work = Path(args.keep) if args.keep is not None else Path(tempfile.mkdtemp(prefix="bench_one_pass_"))
    config = SyntheticConfig(
        height=args.height,
        width=args.width,
        min_frames=args.frames,
        max_frames=args.frames,
        videos={"train": args.videos, "val": 1, "test": 1},
        models=(),
        seed=0,
    )
    write_synthetic(work / "data", config)
    source = SAM2VideoSource(
        args.config,
        None,
        image_size=args.image_size,
        window=args.window,
        proposer="fast",
        proposal=random_weight_params(args.points),
        max_objects=args.max_objects,
    )
    sharpen_masks(source.predictor, 30.0)
    keep_objects(source.predictor, 10.0)
    image_size = int(source.predictor.image_size)
    masklet_data = VSPWDataModule(root=str(work / "data" / "vspw"), clip_len=args.clip_len)
    frames = args.videos * args.frames

    def features(name: str) -> OnePassFeatures:
        return OnePassFeatures(
            level=-1, pooling="bilinear", per_frame=False, feature_root=str(work / name / "features")
        )

    # Warm-up (untimed): both routes on 2 frames of one video.
    write_synthetic(
        work / "warm", replace(config, min_frames=2, max_frames=2, videos={"train": 1, "val": 1, "test": 1})
    )
    warm = VSPWDataModule(root=str(work / "warm" / "vspw"), clip_len=2)
    compute_cache(
        source, warm, "train", cache_root=work / "warm" / "masklets", progress=False, features=features("warm")
    )

    print(
        f"# bench_one_pass: {args.config} random weights @{image_size}, {args.videos} videos x {args.frames} frames "
        f"{args.height}x{args.width}, window {args.window}, clip_len {args.clip_len}, <= {args.max_objects} objects, "
        f"{args.points}x{args.points} points; torch {torch.__version__}, {args.threads} threads, "
        f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f} at start"
    )

    best: dict[str, float] = {}
    for rep in range(args.repeat):  # the routes alternate; best of each
        t0 = time.perf_counter()
        masklets = compute_cache(
            source, masklet_data, "train", cache_root=work / f"two{rep}" / "masklets", progress=False
        )
        t1 = time.perf_counter()
        encoder = SAM2Encoder(args.config, None, level=-1, image_size=args.image_size)
        feature_data = VSPWDataModule(
            root=str(work / "data" / "vspw"), clip_len=args.clip_len, masklet_cache=str(masklets.directory)
        )
        second = compute_feature_cache(
            encoder, feature_data, "train", feature_root=work / f"two{rep}" / "features", device="cpu", progress=False
        )
        t2 = time.perf_counter()
        one = compute_cache(
            source,
            masklet_data,
            "train",
            cache_root=work / f"one{rep}" / "masklets",
            progress=False,
            features=features(f"one{rep}"),
        )
        t3 = time.perf_counter()
        for name, seconds in (
            ("two passes: masklets (compute_cache)", t1 - t0),
            ("two passes: features (compute_feature_cache)", t2 - t1),
            ("two passes: total", t2 - t0),
            ("one pass: masklets + features", t3 - t2),
        ):
            best[name] = min(best.get(name, float("inf")), seconds)
    # The one pass's fixed cost: the equivalent encoder built for the key and the weight check.
    t0 = time.perf_counter()
    features("bind").bind(source, masklet_data, open_cache(one.directory), "train")
    best["one pass, of which binding (fixed: encoder build + weight check)"] = time.perf_counter() - t0
    print(f"\n| route (best of {args.repeat}) | seconds | frames/s |\n|:--|--:|--:|")
    for name, seconds in best.items():
        rate = f"{frames / seconds:.3f}" if "binding" not in name else ""
        print(f"| {name} | {seconds:.2f} | {rate} |")
    two_total, one_total = best["two passes: total"], best["one pass: masklets + features"]
    print(
        f"\none pass is {two_total / one_total:.2f}x the two passes' throughput ({two_total - one_total:.2f} s saved)"
    )
    ok, line = same_files(one.feature_directory, second.directory, "train", one.videos)
    print(f"feature caches: {line}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end; caches in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
