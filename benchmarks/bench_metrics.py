"""Benchmark: scoring the synthetic VSPW val split with vssam2's metrics vs. script-style numpy.

Usage::

    python benchmarks/bench_metrics.py [--height 480 --width 853 --videos 4 --min-frames 30
        --max-frames 40 --workdir DIR --repeat 1 --profile]

What it does, in one run:

1. Writes (or reuses, from ``--workdir``) a synthetic VSPW val split with :mod:`vssam2.synthetic`
   and one simulated model's predictions (``sim_boundary``). A few prediction frames get a
   "no prediction" (255) patch so the pinned handling of 255 is exercised by the check.
2. Reference: :mod:`script_reference` (per-frame Python loops, as the public VSPW / CFFM /
   MRCFA / TV3S scripts score a ``result_submission`` folder).
3. Ours: ``VSPWDataModule(load_frames=False, clip_len=16).test_dataloader()`` feeding
   ``VSSMetrics.update`` chunk by chunk, then ``compute()``.
4. Times (a) end-to-end from disk and (b) compute only with everything pre-loaded in memory,
   and prints Markdown tables with seconds, frames/s and the speed-up.
5. Checks that mIoU, WIoU, mBIoU, mVC8 and mVC16 agree to 1e-9; exits 1 if they do not
   (and 2 if the end-to-end speed-up misses ``--target``, only with ``--strict``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import script_reference  # noqa: E402

from datamodules import VSPWDataModule  # noqa: E402
from vssam2.metrics import VSSMetrics  # noqa: E402
from vssam2.synthetic import SyntheticConfig, write_predictions, write_vspw  # noqa: E402

METRICS = ("mIoU", "WIoU", "mBIoU", "mVC8", "mVC16")
TOLERANCE = 1e-9
MODEL = "sim_boundary"


# ----------------------------------------------------------------------------- data


def _add_unpredicted_patches(pred_dir: Path, every: int) -> int:
    """Marks a rectangle of every ``every``-th prediction frame as 255 ("no prediction")."""
    patched = 0
    for video_dir in sorted(p for p in pred_dir.iterdir() if p.is_dir()):
        for index, path in enumerate(sorted(video_dir.glob("*.png"))):
            if index % every:
                continue
            pred = np.array(Image.open(path))
            h, w = pred.shape
            top, left = (index * 7) % max(1, h // 2), (index * 13) % max(1, w // 2)
            pred[top : top + h // 6, left : left + w // 6] = 255
            Image.fromarray(pred).save(path)
            patched += 1
    return patched


def prepare_data(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path, dict]:
    """Writes the synthetic split into ``workdir`` (reused when its parameters match)."""
    params = {
        "height": args.height,
        "width": args.width,
        "videos": args.videos,
        "min_frames": args.min_frames,
        "max_frames": args.max_frames,
        "seed": args.seed,
        "model": MODEL,
        "unpredicted_every": args.unpredicted_every,
    }
    name = "data_{height}x{width}_v{videos}_f{min_frames}-{max_frames}_s{seed}_{model}_np{unpredicted_every}".format(
        **params
    )
    data = workdir / name
    root, preds = data / "vspw", data / "predictions" / MODEL
    stamp = data / "complete.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        print(f"reusing synthetic data in {data}")
        return root, preds, {"generated_s": None}
    config = SyntheticConfig(
        height=args.height,
        width=args.width,
        min_frames=args.min_frames,
        max_frames=args.max_frames,
        videos={"train": 0, "val": args.videos, "test": 0},
        seed=args.seed,
        models=(MODEL,),
    )
    start = time.perf_counter()
    write_vspw(root, config)
    write_predictions(root, data / "predictions", config, split="val")
    if args.unpredicted_every > 0:
        _add_unpredicted_patches(preds, args.unpredicted_every)
    elapsed = time.perf_counter() - start
    stamp.write_text(json.dumps(params))
    print(f"wrote synthetic data to {data} in {elapsed:.1f} s")
    return root, preds, {"generated_s": elapsed}


# ----------------------------------------------------------------------------- ours


def _datamodule(root: Path, preds: Path, num_workers: int = 0) -> VSPWDataModule:
    return VSPWDataModule(
        str(root), pred_roots={MODEL: str(preds)}, load_frames=False, clip_len=16, num_workers=num_workers
    )


def ours_from_disk(root: Path, preds: Path, num_workers: int = 0) -> tuple[dict[str, float], int, dict[str, float]]:
    """End to end: index the split, stream it with the datamodule, update, compute."""
    timing = {"load_s": 0.0, "update_s": 0.0}
    start = time.perf_counter()
    dm = _datamodule(root, preds, num_workers)
    dm.setup("test")
    metrics = VSSMetrics()
    frames = 0
    loader = iter(dm.test_dataloader())
    while True:
        t0 = time.perf_counter()
        batch = next(loader, None)
        t1 = time.perf_counter()
        timing["load_s"] += t1 - t0
        if batch is None:
            break
        metrics.update(
            batch["preds"][MODEL], batch["gt"], video=batch["video"], start=batch["start"], last=batch["last"]
        )
        timing["update_s"] += time.perf_counter() - t1
        frames += int(batch["gt"].shape[0])
    result = metrics.compute()
    timing["total_s"] = time.perf_counter() - start
    return {name: float(result[name]) for name in METRICS}, frames, timing


def load_chunks(root: Path, preds: Path) -> list[dict]:
    """All chunks of the split in memory, as the datamodule yields them."""
    dm = _datamodule(root, preds)
    dm.setup("test")
    return list(dm.test_dataloader())


def ours_in_memory(chunks: list[dict]) -> dict[str, float]:
    metrics = VSSMetrics()
    for batch in chunks:
        metrics.update(
            batch["preds"][MODEL], batch["gt"], video=batch["video"], start=batch["start"], last=batch["last"]
        )
    result = metrics.compute()
    return {name: float(result[name]) for name in METRICS}


def videos_as_numpy(chunks: list[dict]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Whole videos (T, H, W) uint8 from the chunks, for the reference's compute-only run."""
    gts: dict[str, list[np.ndarray]] = {}
    preds: dict[str, list[np.ndarray]] = {}
    for batch in chunks:
        gts.setdefault(batch["video"], []).append(batch["gt"].numpy())
        preds.setdefault(batch["video"], []).append(batch["preds"][MODEL].numpy())
    return [np.concatenate(v) for v in gts.values()], [np.concatenate(v) for v in preds.values()]


def warm_up() -> None:
    """First calls into torch / numpy / cv2 allocate and dispatch lazily: keep that out of the timings."""
    gt = np.zeros((20, 32, 48), dtype=np.uint8)
    gt[:, 8:20, 10:30] = 3
    gt[:, 0:2] = 255
    pred = gt.copy()
    pred[::3, 12:16, 12:20] = 5
    metrics = VSSMetrics()
    metrics.update(torch.from_numpy(pred), torch.from_numpy(gt), video="warm", start=0, last=True)
    metrics.compute()
    script_reference.score_in_memory([gt], [pred])


# ----------------------------------------------------------------------------- report


def decode_all(root: Path, preds: Path) -> int:
    """Decodes every GT mask and prediction PNG once (PIL), nothing else; returns the file count."""
    paths = sorted((root / "data").glob("*/mask/*.png")) + sorted(preds.glob("*/*.png"))
    for path in paths:
        np.asarray(Image.open(path))
    return len(paths)


def best_of(repeat: int, fn):
    """Runs ``fn`` ``repeat`` times; returns (last result, fastest seconds)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def table(title: str, frames: int, ref_s: float, ours_s: float, ref_label: str, ours_label: str) -> str:
    lines = [
        f"**{title}**",
        "",
        "| implementation | seconds | frames/s | speed-up |",
        "|---|---:|---:|---:|",
        f"| {ref_label} | {ref_s:.3f} | {frames / ref_s:.1f} | 1.00× |",
        f"| {ours_label} | {ours_s:.3f} | {frames / ours_s:.1f} | {ref_s / ours_s:.2f}× |",
    ]
    return "\n".join(lines)


def profile_ours(root: Path, preds: Path, top: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    ours_from_disk(root, preds)  # in-process loading, so the profile sees the readers too
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=853)
    parser.add_argument("--videos", type=int, default=4, help="videos in the val split")
    parser.add_argument("--min-frames", type=int, default=30)
    parser.add_argument("--max-frames", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="where data is written / reused (default: temp dir)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per timing; the fastest counts")
    parser.add_argument(
        "--unpredicted-every",
        type=int,
        default=7,
        help="every k-th prediction frame gets a 255 'no prediction' patch (0: none)",
    )
    parser.add_argument(
        "--num-workers", type=int, default=0, help="DataLoader workers of ours, end to end (the reference has none)"
    )
    parser.add_argument("--target", type=float, default=10.0, help="end-to-end speed-up target")
    parser.add_argument("--strict", action="store_true", help="exit 2 if the end-to-end target is missed")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of ours (end to end)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.min_frames <= 16:
        print("note: videos with <= 16 frames score differently in the CFFM script (it drops them)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="vssam2_bench_")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        root, preds, info = prepare_data(args, workdir)
        warm_up()

        # (a) end to end, from disk
        ref_disk, ref_e2e_s = best_of(
            args.repeat, lambda: script_reference.score_from_disk(str(root), str(preds), split="val")
        )
        (ours_disk, frames, ours_timing), ours_e2e_s = best_of(
            args.repeat, lambda: ours_from_disk(root, preds, args.num_workers)
        )

        _, floor_s = best_of(args.repeat, lambda: decode_all(root, preds))

        # (b) compute only, everything in memory
        chunks = load_chunks(root, preds)
        gts, pred_videos = videos_as_numpy(chunks)
        ref_mem, ref_mem_s = best_of(args.repeat, lambda: script_reference.score_in_memory(gts, pred_videos))
        ours_mem, ours_mem_s = best_of(args.repeat, lambda: ours_in_memory(chunks))

        h, w = gts[0].shape[1:]
        print()
        print("## vssam2 metrics vs. script-style numpy (synthetic VSPW val)")
        print()
        print(
            f"- machine: {platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}, "
            f"usable cores={len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}, "
            f"torch {torch.__version__} threads={torch.get_num_threads()}, numpy {np.__version__}, "
            f"reference erosion: {'cv2' if script_reference.cv2 is not None else 'scipy'}"
        )
        print(
            f"- data: {len(gts)} videos, {frames} frames, {h}×{w}, model {MODEL}, "
            f"'no prediction' patch every {args.unpredicted_every} frames; repeat={args.repeat} (fastest counts)"
        )
        print(
            f"- reference end to end: {ref_disk.files_read} PNG reads in {ref_disk.read_seconds:.3f} s "
            f"({ref_disk.files_read / (2 * frames):.1f} reads of every GT+prediction pair), "
            f"everything else (compute, listing, allocation) {ref_e2e_s - ref_disk.read_seconds:.3f} s"
        )
        print(
            f"- decoding every GT + prediction PNG once (PIL, nothing else): {floor_s:.3f} s, so no "
            f"single-process scorer that reads the PNGs can beat the reference end to end by more than "
            f"{ref_e2e_s / floor_s:.1f}× here"
        )
        print(
            f"- ours end to end (num_workers={args.num_workers}): waiting for batches {ours_timing['load_s']:.3f} s, "
            f"VSSMetrics.update {ours_timing['update_s']:.3f} s"
        )
        print()
        print(
            table(
                "(a) end to end, from disk",
                frames,
                ref_e2e_s,
                ours_e2e_s,
                "reference (script_reference.score_from_disk)",
                "ours (VSPWDataModule + VSSMetrics)",
            )
        )
        print()
        print(
            table(
                "(b) compute only, data in memory",
                frames,
                ref_mem_s,
                ours_mem_s,
                "reference (script_reference.score_in_memory)",
                "ours (VSSMetrics.update/compute)",
            )
        )
        print()

        # numbers must be identical
        rows = [
            ("reference, disk", ref_disk.values),
            ("reference, memory", ref_mem.values),
            ("ours, disk", ours_disk),
            ("ours, memory", ours_mem),
        ]
        print("| result | " + " | ".join(METRICS) + " |")
        print("|---|" + "---:|" * len(METRICS))
        for label, values in rows:
            print(f"| {label} | " + " | ".join(f"{values[m]:.12f}" for m in METRICS) + " |")
        diffs = {m: max(abs(values[m] - ref_disk.values[m]) for _, values in rows) for m in METRICS}
        max_diff = max(diffs.values())
        nan = [m for m in METRICS if any(np.isnan(values[m]) for _, values in rows)]
        print()
        print("max abs difference per metric: " + ", ".join(f"{m} {d:.2e}" for m, d in diffs.items()))
        ok = max_diff <= TOLERANCE and not nan
        print(
            f"numbers {'IDENTICAL' if ok else 'DIFFER'} (max abs difference {max_diff:.2e}, tolerance {TOLERANCE:g}"
            + (f"; NaN in {nan}" if nan else "")
            + ")"
        )
        speedup = ref_e2e_s / ours_e2e_s
        compute_speedup = ref_mem_s / ours_mem_s

        def verdict(value: float) -> str:
            return "met" if value >= args.target else "NOT met"

        print(
            f"compute-only speed-up (the metrics themselves) {compute_speedup:.2f}× "
            f"(target ≥ {args.target:g}×: {verdict(compute_speedup)}); end-to-end speed-up {speedup:.2f}× "
            f"(target ≥ {args.target:g}×: {verdict(speedup)}; decoding the PNGs once bounds it at "
            f"{ref_e2e_s / floor_s:.1f}× here)"
        )
        if args.profile:
            print()
            print("### cProfile of ours, end to end (sorted by own time)")
            print("```")
            print(profile_ours(root, preds))
            print("```")
        if not ok:
            return 1
        if args.strict and speedup < args.target:
            return 2
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
