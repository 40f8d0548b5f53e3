"""Benchmark: I-SAM2-LoRA online training against frozen-encoder online training, and the memory
of one LoRA training step at 1024 px on the CPU.

Usage::

    python benchmarks/bench_lora.py                                   # Hiera-T (official config, random weights)
    python benchmarks/bench_lora.py --config sam2.1_hiera_large --memory-config sam2.1_hiera_large
    python benchmarks/bench_lora.py --device cuda                     # bf16 trunk on a GPU

Part 1 (throughput, masklet vectors / s): the same clips (random frames, drifting Voronoi
masklets, GT classes per masklet) go through ``MaskletClassifier.training_step`` + AdamW, i.e.
the code train.py runs, with three encoders built from the same SAM2 weights: frozen
``SAM2Encoder`` (encoder under no_grad, head step), ``SAM2LoRAEncoder`` without and with
activation checkpointing (encoder forward with autograd, backward into the adapters). The
ratio to frozen online training is measured in one run. (Training from the feature cache is
another 100x+ faster, see bench_classifier.py, but cannot serve adapters.)

Part 2 (memory): one training step (``--memory-frames`` frames, one encoder call per
``--encoder-batch-size`` frames) at ``--memory-size`` px, each variant in a fresh process; the
figure is the peak resident memory during the step minus the resident memory before it
(model built, one inference warm-up). On CPU torch frees large blocks to the OS, so the
peak RSS is the step's activation + gradient memory.

Writes ``results.md`` / ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from bench_classifier import voronoi_segments  # noqa: E402  (benchmarks/ is the script's folder)

from vssam2.classifier import MaskletClassifier  # noqa: E402
from vssam2.encoders import SAM2Encoder, SAM2LoRAEncoder  # noqa: E402

NUM_CLASSES = 124
VARIANTS = ("frozen", "lora", "lora_checkpointing")


def batches(args: argparse.Namespace, count: int, frames: int, seed: int = 0) -> list[dict[str, Any]]:
    """Training batches as the datamodule gives them: lists of (T, H, W, 3) frames, segments, GT."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for b in range(count):
        items = []
        for c in range(args.batch_size):
            segments = voronoi_segments(frames, args.height, args.width, args.masklets, seed=seed + 31 * b + c)
            image = torch.randint(0, 256, (frames, args.height, args.width, 3), dtype=torch.uint8, generator=generator)
            gt = ((segments * 7 + c) % NUM_CLASSES).to(torch.uint8)
            items.append((image, segments, gt))
        out.append({key: [item[i] for item in items] for i, key in enumerate(("frames", "segments", "gt"))})
    return out


def build(variant: str, config: str, image_size: int | None, device: str) -> MaskletClassifier:
    common = {"config": config, "checkpoint": None, "image_size": image_size, "seed": 0}
    if variant == "frozen":
        encoder = SAM2Encoder(**common)
    else:
        encoder = SAM2LoRAEncoder(**common, rank=8, alpha=16.0, checkpointing=variant == "lora_checkpointing")
    return MaskletClassifier(encoder=encoder, encoder_batch_size=1, hidden_dims=(512,)).to(device)


def train_steps(model: MaskletClassifier, data: list[dict[str, Any]], batch_size: int) -> tuple[float, int]:
    """Seconds and masklet vectors of ``training_step`` + backward + AdamW over ``data``."""
    model.hparams.encoder_batch_size = batch_size
    model.train()
    optimizer = model.configure_optimizers()["optimizer"]  # the head, and the adapters when there are some
    model.log = lambda *a, **k: None  # no trainer attached: Lightning's logging is not what is timed
    vectors = 0
    start = time.perf_counter()
    for batch in data:
        loss = model.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        vectors += sum(int(s.unique().numel()) - int((s == 0).any()) for s in batch["segments"])
    if str(model.device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, vectors


def throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    data = batches(args, args.steps, args.frames)
    warm = batches(args, 1, args.frames, seed=99)
    rows = []
    for variant in VARIANTS:
        model = build(variant, args.config, args.image_size, args.device)
        train_steps(model, warm, args.encoder_batch_size)  # first-call allocations, autotuning
        seconds, vectors = train_steps(model, data, args.encoder_batch_size)
        trainable = sum(p.numel() for p in model.trainable_encoder_parameters())
        rows.append(
            {
                "variant": variant,
                "seconds": seconds,
                "vectors": vectors,
                "vectors_per_s": vectors / seconds,
                "s_per_step": seconds / len(data),
                "trainable_encoder_params": trainable,
                "encoder_params": sum(p.numel() for p in model.encoder.parameters()),
            }
        )
        print(f"  {variant}: {vectors / seconds:.1f} vectors/s ({seconds / len(data):.2f} s/step)", flush=True)
    return rows


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def memory_child(args: argparse.Namespace) -> None:
    """One step of one variant in this (fresh) process; prints JSON."""
    model = build(args.child, args.memory_config, args.memory_size, "cpu")
    data = batches(argparse.Namespace(**{**vars(args), "batch_size": 1}), 1, args.memory_frames)
    with torch.no_grad():
        model.encoder(data[0]["frames"][0][:1])
    before = rss_kib()
    seconds, _ = train_steps(model, data, args.encoder_batch_size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"variant": args.child, "step_mib": (peak - before) / 1024, "seconds": seconds}))


def memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--child", variant]
        for key in (
            "memory_config",
            "memory_size",
            "memory_frames",
            "encoder_batch_size",
            "height",
            "width",
            "masklets",
        ):
            command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"memory run of {variant} failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  {variant}: {row['step_mib']:.0f} MiB over the step ({row['seconds']:.1f} s)", flush=True)
    return rows


def report(args: argparse.Namespace, speed: list[dict[str, Any]], mem: list[dict[str, Any]]) -> str:
    frozen = next(r for r in speed if r["variant"] == "frozen")
    lora = next(r for r in speed if r["variant"] == "lora")
    size = args.image_size or "config"
    lines = [
        f"## Online training: {args.config} @ {size}, {args.steps} steps x {args.batch_size} clips x "
        f"{args.frames} frames {args.height}x{args.width}, ~{args.masklets} masklets, {args.device}, "
        f"{torch.get_num_threads()} threads",
        "",
        "| encoder | masklet vectors / s | s / step | vs frozen | trainable encoder params |",
        "|:--|--:|--:|--:|--:|",
    ]
    for r in speed:
        lines.append(
            f"| {r['variant']} | {r['vectors_per_s']:.1f} | {r['s_per_step']:.2f} | "
            f"{r['vectors_per_s'] / frozen['vectors_per_s']:.2f}x | {r['trainable_encoder_params']:,} "
            f"of {r['encoder_params']:,} ({100 * r['trainable_encoder_params'] / r['encoder_params']:.2f}%) |"
        )
    lines += [
        "",
        f"LoRA online training runs at {lora['vectors_per_s'] / frozen['vectors_per_s']:.2f}x the frozen encoder's "
        "online rate (the backward through the trunk is the extra cost).",
    ]
    if mem:
        lines += [
            "",
            f"## Memory of one training step: {args.memory_config} @ {args.memory_size}, {args.memory_frames} frames, "
            f"{args.encoder_batch_size} frame(s) per encoder call, CPU",
            "",
            "| encoder | step memory (MiB, peak RSS over the step) | s |",
            "|:--|--:|--:|",
        ]
        lines += [f"| {r['variant']} | {r['step_mib']:.0f} | {r['seconds']:.1f} |" for r in mem]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="sam2.1_hiera_tiny", help="SAM2 config of the throughput part")
    parser.add_argument("--image-size", type=int, default=512, help="encoder input of the throughput part")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2, help="clips per step")
    parser.add_argument("--frames", type=int, default=4, help="frames per training clip")
    parser.add_argument("--encoder-batch-size", type=int, default=1, help="frames per encoder call")
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--masklets", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-config", default="sam2.1_hiera_tiny")
    parser.add_argument("--memory-size", type=int, default=1024)
    parser.add_argument("--memory-frames", type=int, default=4)
    parser.add_argument("--no-memory", action="store_true", help="skip part 2")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_lora"))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(args)
        return
    print("online training throughput:", flush=True)
    speed = throughput(args)
    mem = [] if args.no_memory else (print("step memory:", flush=True), memory(args))[1]
    text = report(args, speed, mem)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text)
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "throughput": speed, "memory": mem}
    (args.out / "results.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
