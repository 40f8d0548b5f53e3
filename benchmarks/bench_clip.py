"""Benchmark: I-CLIP zero-shot masklets/s, dense pooling vs masked crops, on the same clip and masklets.

Usage::

    python benchmarks/bench_clip.py                       # tiny + ViT-B/16-sized random CLIPs, 8 frames
    python benchmarks/bench_clip.py --vitb-dense-sizes 224 448 --threads 2
    python benchmarks/bench_clip.py --models tiny --frames 32   # quick

One seeded synthetic street clip (``--frames`` x ``--height`` x ``--width``, in memory) and its
masklets, classified zero-shot by :class:`vssam2.zero_shot.ZeroShotCLIP` against the 124 VSPW
class names, once per embedding. Masklets (``--masklets``): ``superpixel`` = SLIC superpixels
(``--segments`` per frame) linked across frames, many short-lived ids; ``oracle`` = connected
ground-truth components linked across frames, object-like masklets that persist through the
clip as SAM2's tracked masklets do. The two modes:

- ``dense``: every frame through the tower at the dense ``image_size``, patch features pooled
  per masklet (Eq. 3): one pass per frame;
- ``crop``: each masklet's masked crop (largest frame, square box, 10 % margin, mean colour
  outside the masklet) through the tower's pooled head at its own size: one pass per masklet.

Timed: ``ZeroShotCLIP.forward`` on the whole clip (embedding, text matching, painting), best
of ``--repeats`` after a warm-up; the text embeddings are computed once when the model is
built and are not timed. The CLIPs are random-weight folders written in transformers' format
(``write_tiny_clip``): the tiny one (32 px, patch 8, 2 layers of width 32) and one of ViT-B/16's
shape (224 px, patch 16, 12 layers of width 768, 512-d projection; a tiny text tower, which is
not timed). Random weights make speed, not accuracy, comparable. Prints a Markdown table
(masklets/s of each mode and dense / crop) and writes ``results.md`` / ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vssam2.encoders.clip import CLIPEncoder, write_tiny_clip  # noqa: E402
from vssam2.labels import raw_to_eval  # noqa: E402
from vssam2.masklets.oracle import OracleSource  # noqa: E402
from vssam2.masklets.superpixel import SuperpixelSource  # noqa: E402
from vssam2.synthetic import SyntheticConfig, SyntheticVideo, generate_video  # noqa: E402
from vssam2.zero_shot import ZeroShotCLIP  # noqa: E402

#: ViT-B/16's vision tower (openai/clip-vit-base-patch16), random weights.
VIT_B16 = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
VIT_B16 |= {"image_size": 224, "patch_size": 16}


def street_clip(frames: int, height: int, width: int) -> SyntheticVideo:
    """One seeded synthetic street clip."""
    config = SyntheticConfig(height=height, width=width)
    return generate_video(np.random.default_rng(0), config, frames, scene="street")


def clip_masklets(video: SyntheticVideo, kind: str, segments: int) -> torch.Tensor:
    """(T, H, W) int32 masklets of the clip (0 = none), linked across frames.

    Args:
        video: the clip.
        kind: "superpixel" (SLIC, ``segments`` per frame) or "oracle" (GT components).
        segments: SLIC superpixels per frame.
    """
    frames = torch.from_numpy(np.ascontiguousarray(video.frames))
    gt = torch.from_numpy(raw_to_eval(video.raw))
    source = SuperpixelSource(method="slic", n_segments=segments, temporal=True) if kind == "superpixel" else None
    source = source or OracleSource()
    source.begin_video("bench", int(frames.shape[1]), int(frames.shape[2]))
    masklets = source.add_chunk(frames, 0, gt)
    source.end_video()
    return masklets


def time_forward(model: ZeroShotCLIP, batch: dict[str, Any], repeats: int) -> float:
    """Best wall-clock seconds of ``model(batch)`` over ``repeats`` runs, after one warm-up."""
    warm = {**batch, "frames": batch["frames"][:1], "segments": batch["segments"][:1]}
    model(warm)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model(batch)
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=432)
    parser.add_argument("--masklets", choices=["superpixel", "oracle"], default="superpixel")
    parser.add_argument("--segments", type=int, default=40, help="SLIC superpixels per frame")
    parser.add_argument("--models", nargs="+", choices=["tiny", "vitb16"], default=["tiny", "vitb16"])
    parser.add_argument("--vitb-dense-sizes", type=int, nargs="+", default=[224], help="dense image_size of ViT-B/16")
    parser.add_argument("--crop-margin", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_clip"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    video = street_clip(args.frames, args.height, args.width)
    frames = torch.from_numpy(np.ascontiguousarray(video.frames))
    segments = clip_masklets(video, args.masklets, args.segments)
    masklets = int((segments.unique() > 0).sum())  # masklets of the clip: the crop mode's passes
    per_frame = float(np.mean([int((segments[t].unique() > 0).sum()) for t in range(args.frames)]))
    batch = {"video": "bench", "frames": frames, "segments": segments, "preds": {}}
    args.out.mkdir(parents=True, exist_ok=True)

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        if "tiny" in args.models:
            folders["tiny"] = (write_tiny_clip(Path(tmp) / "tiny"), [None])
        if "vitb16" in args.models:
            folder = write_tiny_clip(Path(tmp) / "vitb16", vision=VIT_B16, projection_dim=512)
            folders["vitb16"] = (folder, args.vitb_dense_sizes)
        for name, (folder, sizes) in folders.items():
            for size in sizes:
                encoder = CLIPEncoder(str(folder), image_size=size)
                seconds = {}
                for embedding in ("dense", "crop"):
                    model = ZeroShotCLIP(encoder, embedding=embedding, crop_margin=args.crop_margin).eval()
                    model.methods = ["I-CLIP"]
                    seconds[embedding] = time_forward(model, batch, args.repeats)
                results.append(
                    {
                        "model": name,
                        "dense_image_size": encoder.image_size,
                        "crop_size": encoder.crop_size,
                        "seconds": seconds,
                        "masklets_per_s": {mode: masklets / s for mode, s in seconds.items()},
                        "dense_over_crop": seconds["crop"] / seconds["dense"],
                    }
                )
                print(f"{name} dense {encoder.image_size} px: {seconds}", file=sys.stderr, flush=True)

    lines = [
        "| CLIP | dense input | crop input | dense masklets/s | crop masklets/s | dense / crop |",
        "|:--|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        rate = r["masklets_per_s"]
        lines.append(
            f"| {r['model']} | {r['dense_image_size']} px | {r['crop_size']} px | {rate['dense']:.1f} | "
            f"{rate['crop']:.1f} | {r['dense_over_crop']:.1f}x |"
        )
    table = "\n".join(lines)
    what = f"SLIC {args.segments}/frame" if args.masklets == "superpixel" else "oracle (GT components)"
    summary = (
        f"{args.frames} frames of {args.height}x{args.width}, {what} masklets: {masklets} in the clip "
        f"({masklets / args.frames:.1f} crops per frame; {per_frame:.1f} masklets on a frame), crop margin "
        f"{args.crop_margin}, CPU, {args.threads} thread(s), best of {args.repeats}"
    )
    print(summary)
    print(table)
    (args.out / "results.md").write_text(summary + "\n\n" + table + "\n")
    setup = vars(args) | {"out": str(args.out), "masklets": masklets, "masklets_per_frame": per_frame}
    (args.out / "results.json").write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
