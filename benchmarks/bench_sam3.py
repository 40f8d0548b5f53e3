"""Benchmark: what the SAM 3 masklet source costs per frame and per stage, against SAM2VideoSource.

Usage::

    python benchmarks/bench_sam3.py                         # tiny random models, 120x216, 24 frames
    python benchmarks/bench_sam3.py --prompts 1 8 34 124    # how the detector scales with prompts
    python benchmarks/bench_sam3.py --device cuda --dtype bfloat16   # on a GPU

Both sources see the same frames (one seeded synthetic clip, in memory, one ``add_chunk`` per
frame), the same window (8) and the same cap on tracked objects (8), on the same torch thread
count. SAM 3 is the tiny random-weight model of ``vssam2.masklets.sam3_model`` written to a
temporary folder in transformers' format; SAM2 is the tiny
random-weight test model with the fast proposer (8×8 points). With random weights every SAM 3
detection scores about 0.25, so both thresholds are 0 and every window fills its object cap.

Reported per SAM 3 run: ms per frame of each stage the source times (preprocess, vision
encoder, detector over all prompts, tracker over all objects, SAM 3's association heuristics,
postprocess), the text encoder once per source, ms per prompt and per tracked object, frames/s,
and the ratio of SAM 3's time per frame to SAM2VideoSource's on the same frames. Writes
``results.md`` / ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vssam2.masklets.proposals import ProposalParams  # noqa: E402
from vssam2.masklets.sam2_video import SAM2VideoSource  # noqa: E402
from vssam2.masklets.sam3_model import write_tiny_sam3  # noqa: E402
from vssam2.masklets.sam3_video import STAGES, SAM3VideoSource  # noqa: E402
from vssam2.synthetic import SCENES, SyntheticConfig, generate_video  # noqa: E402

PER_FRAME = tuple(stage for stage in STAGES if stage != "text_encoder")


def clip(frames: int, height: int, width: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames of one seeded synthetic street clip."""
    config = SyntheticConfig(height=height, width=width)
    video = generate_video(np.random.default_rng(0), config, frames, scene="street")
    return torch.from_numpy(np.ascontiguousarray(video.frames))


def run(source: Any, frames: torch.Tensor) -> tuple[float, int]:
    """Seconds to stream the clip through the source frame by frame, and the objects it tracked
    summed over frames (SAM 3; 0 for SAM2)."""
    source.begin_video("bench", int(frames.shape[1]), int(frames.shape[2]))
    started = time.perf_counter()
    for t in range(frames.shape[0]):
        source.add_chunk(frames[t : t + 1], t)
    seconds = time.perf_counter() - started
    object_frames = int(getattr(source, "object_frames", 0))
    source.end_video()
    return seconds, object_frames


def class_prompts(count: int) -> list[str]:
    """``count`` distinct class names: the synthetic world's, then the rest of VSPW's."""
    from vssam2.labels import vspw_classes

    names = sorted({c for scene in SCENES.values() for c in (*scene.stuff, *scene.things)})
    names += [n for n in vspw_classes().names if n not in names]
    return [n.replace("_", " ").lower() for n in names[:count]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=216)
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 8, 34])
    parser.add_argument("--max-objects", type=int, default=8)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_sam3"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated")  # from a dependency
    frames = clip(args.frames, args.height, args.width)
    args.out.mkdir(parents=True, exist_ok=True)

    sam2 = SAM2VideoSource(
        config="vssam2-tiny-test",
        checkpoint=None,
        device=args.device,
        window=args.window,
        proposer="fast",
        max_objects=args.max_objects,
        proposal=ProposalParams(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0),
    )
    run(sam2, frames[:2])  # warm-up (model load, first-call allocations)
    sam2_seconds, _ = run(sam2, frames)
    sam2_ms = sam2_seconds / args.frames * 1000

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sam3"
        write_tiny_sam3(folder)
        for count in args.prompts:
            source = SAM3VideoSource(
                str(folder),
                class_prompts(count),
                window=args.window,
                score_threshold=0.0,
                new_object_threshold=0.0,
                max_objects=args.max_objects,
                device=args.device,
                dtype=args.dtype,
            )
            run(source, frames[:2])  # warm-up: model load and the text embeddings (cached after)
            text_ms = source.timings.get("text_encoder", 0.0) * 1000
            seconds, object_frames = run(source, frames)
            stages = {stage: source.timings.get(stage, 0.0) / args.frames * 1000 for stage in PER_FRAME}
            objects = object_frames / args.frames  # tracked, not only those visible on top
            results.append(
                {
                    "prompts": count,
                    "ms_per_frame": seconds / args.frames * 1000,
                    "frames_per_s": args.frames / seconds,
                    "stages_ms_per_frame": stages,
                    "text_encoder_ms_once": text_ms,
                    "detector_ms_per_prompt": stages["detector"] / count,
                    "objects_per_frame": objects,
                    "tracker_ms_per_object": stages["tracker"] / max(objects, 1e-9),
                    "ratio_to_sam2": (seconds / args.frames * 1000) / sam2_ms,
                }
            )

    head = (
        "| prompts | ms/frame | frames/s | "
        + " | ".join(PER_FRAME)
        + " | text (once) | ms/prompt | objects | ms/object | × SAM2 |"
    )
    lines = [head, "|" + "---:|" * (len(PER_FRAME) + 8)]
    for r in results:
        cells = [r["ms_per_frame"], r["frames_per_s"], *r["stages_ms_per_frame"].values(), r["text_encoder_ms_once"]]
        cells += [r["detector_ms_per_prompt"], r["objects_per_frame"], r["tracker_ms_per_object"], r["ratio_to_sam2"]]
        lines.append(f"| {r['prompts']} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    table = "\n".join(lines)
    summary = (
        f"{args.frames} frames of {args.height}x{args.width}, window {args.window}, "
        f"at most {args.max_objects} objects, "
        f"{args.device} {args.dtype}, {args.threads} thread(s); SAM2VideoSource (tiny): {sam2_ms:.1f} ms/frame"
    )
    print(summary)
    print(table)
    (args.out / "results.md").write_text(summary + "\n\n" + table + "\n")
    (args.out / "results.json").write_text(
        json.dumps(
            {"setup": vars(args) | {"out": str(args.out)}, "sam2_ms_per_frame": sam2_ms, "sam3": results}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
