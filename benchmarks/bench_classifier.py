"""Benchmark: masklet classifier training from the feature cache vs. online encoding, and
masked-average pooling (vssam2.pooling) vs. the per-masklet loop.

    python benchmarks/bench_classifier.py [--encoder-config vssam2-tiny-test] [--image-size 1024]
        [--frames 16 --height 480 --width 853 --masklets 50 200 --channels 256 --grid 64]

Part 1 (training throughput, masklet vectors/s): the same synthetic clips (random segment maps
of `--masklets` Voronoi cells) are used twice: online — encode every frame with the frozen
SAM2 image encoder (random weights of `--encoder-config`), pool, classify, backward — and from
the cache — the pooled vectors are stored once, then batches of vectors go through the head.
Both run the same number of epochs; the ratio is measured in one run.

Part 2 (pooling): features (T, C, grid, grid) and segment maps (T, H, W); ours vs. the loop
public code writes (upsample the features to the frame, then one boolean mean per masklet).
Checks that both agree (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vssam2.encoders import SAM2Encoder  # noqa: E402
from vssam2.features.extract import encode_frames, extract_clip_masklets  # noqa: E402
from vssam2.heads import MLPHead  # noqa: E402
from vssam2.pooling import masked_average_pool  # noqa: E402
from vssam2.refine import masklet_targets  # noqa: E402

NUM_CLASSES = 124


def voronoi_segments(frames: int, height: int, width: int, masklets: int, seed: int) -> torch.Tensor:
    """(T, H, W) int32 maps of ``masklets`` Voronoi cells that drift a little per frame (ids 1..M)."""
    rng = np.random.default_rng(seed)
    centres = rng.random((masklets, 2)) * (height, width)
    drift = rng.normal(0, 2, (masklets, 2))
    yy, xx = np.mgrid[:height, :width]
    out = np.empty((frames, height, width), np.int32)
    for t in range(frames):
        d = ((yy[None] - (centres[:, 0, None, None] + t * drift[:, 0, None, None])) ** 2) + (
            (xx[None] - (centres[:, 1, None, None] + t * drift[:, 1, None, None])) ** 2
        )  # (M, H, W)
        out[t] = d.argmin(0) + 1
    return torch.from_numpy(out)


def per_masklet_loop(features: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The common way: upsample features to the frame, then one masked mean per masklet."""
    up = F.interpolate(features, size=segments.shape[1:], mode="bilinear", align_corners=False)  # (T, C, H, W)
    up = up.permute(0, 2, 3, 1)  # (T, H, W, C)
    ids = [i for i in segments.unique().tolist() if i]
    return torch.stack([up[segments == i].mean(0) for i in ids])


def best_of(repeat: int, fn):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def bench_training(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    encoder = SAM2Encoder(config=args.encoder_config, checkpoint=None, image_size=args.image_size)
    clips = []
    for c in range(args.clips):
        segments = voronoi_segments(args.frames, args.height, args.width, args.train_masklets, seed=c)
        frames = torch.randint(0, 256, (args.frames, args.height, args.width, 3), dtype=torch.uint8)
        gt = ((segments * 7 + c) % NUM_CLASSES).to(torch.uint8)
        clips.append((frames, segments, gt))
    head = MLPHead(encoder.out_channels, NUM_CLASSES)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)

    def step(vectors: torch.Tensor, target: torch.Tensor) -> None:
        loss = F.cross_entropy(head(vectors), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def online_epoch() -> int:
        count = 0
        for frames, segments, gt in clips:
            with torch.no_grad():
                features = encode_frames(encoder, frames, args.encoder_batch_size, torch.device("cpu"))
            m = extract_clip_masklets(features, segments, gt)
            step(m.vectors, masklet_targets(m.hist))
            count += m.vectors.shape[0]
        return count

    # The cache: vectors computed once (its cost is reported, not counted per epoch).
    start = time.perf_counter()
    vectors, targets = [], []
    for frames, segments, gt in clips:
        with torch.no_grad():
            features = encode_frames(encoder, frames, args.encoder_batch_size, torch.device("cpu"))
        m = extract_clip_masklets(features, segments, gt)
        vectors.append(m.vectors.half())
        targets.append(masklet_targets(m.hist))
    build = time.perf_counter() - start
    cached_vectors, cached_targets = torch.cat(vectors), torch.cat(targets)

    def cached_epochs() -> int:
        # Epochs from the cache take milliseconds: time several per measurement.
        for _ in range(args.cached_epochs):
            order = torch.randperm(cached_vectors.shape[0])
            for i in range(0, order.shape[0], args.batch_size):
                index = order[i : i + args.batch_size]
                step(cached_vectors[index].float(), cached_targets[index])
        return cached_vectors.shape[0] * args.cached_epochs

    t_online, n_online = best_of(args.repeat, online_epoch)
    cached_epochs()  # warm-up (first-call allocations)
    t_cached, n_cached = best_of(args.repeat, cached_epochs)
    t_cached /= args.cached_epochs
    n_cached //= args.cached_epochs
    rate_online, rate_cached = n_online / t_online, n_cached / t_cached
    print(
        f"\n## Training throughput ({args.clips} clips × {args.frames} frames {args.height}×{args.width}, "
        f"~{args.train_masklets} masklets/frame-clip, encoder {args.encoder_config} "
        f"@ {encoder.describe().get('image_size')})\n"
    )
    print("| path | s / epoch | masklet vectors / s |\n|:--|--:|--:|")
    print(f"| online (encode + pool + head) | {t_online:.3f} | {rate_online:,.0f} |")
    print(f"| feature cache (head only) | {t_cached:.4f} | {rate_cached:,.0f} |")
    print(f"\nspeed-up of the feature cache: {rate_cached / rate_online:.1f}× (building the cache once: {build:.2f} s)")


def bench_pooling(args: argparse.Namespace) -> bool:
    ok = True
    print(
        f"\n## Masked-average pooling ({args.frames} frames {args.height}×{args.width}, C={args.channels}, "
        f"features {args.grid}×{args.grid})\n"
    )
    print("| masklets | per-masklet loop (s) | ours (s) | speed-up |\n|:--|--:|--:|--:|")
    torch.manual_seed(0)
    features = torch.randn(args.frames, args.channels, args.grid, args.grid)
    for masklets in args.masklets:
        segments = voronoi_segments(args.frames, args.height, args.width, masklets)
        t_loop, ref = best_of(args.repeat, lambda segments=segments: per_masklet_loop(features, segments))
        t_ours, ours = best_of(args.repeat, lambda segments=segments: masked_average_pool(features, segments))
        if not torch.allclose(ours.vectors, ref, atol=1e-4, rtol=1e-4):
            print(f"MISMATCH at {masklets} masklets: max diff {(ours.vectors - ref).abs().max():.2e}")
            ok = False
        print(f"| {masklets} | {t_loop:.3f} | {t_ours:.3f} | {t_loop / t_ours:.1f}× |")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder-config", default="vssam2-tiny-test")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=853)
    parser.add_argument("--train-masklets", type=int, default=100)
    parser.add_argument("--masklets", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--encoder-batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cached-epochs", type=int, default=20, help="epochs per timing of the cached path")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    print(
        f"device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    if not args.skip_training:
        bench_training(args)
    if not bench_pooling(args):
        sys.exit(1)


if __name__ == "__main__":
    main()
