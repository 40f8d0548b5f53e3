"""Metric states sync across 2 CPU processes (gloo) to exactly the single-process numbers."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vssam2.metrics import MetricConfig, VSSMetrics

NUM_CLASSES = 4


def make_videos() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    videos = []
    for frames in (20, 18, 25):
        gt = np.repeat(np.repeat(rng.integers(0, NUM_CLASSES, (5, 6)), 4, 0), 4, 1)
        gts = np.stack([np.roll(gt, k // 4, axis=1) for k in range(frames)]).astype(np.uint8)
        preds = gts.copy()
        noise = rng.random(preds.shape) < 0.05
        preds[noise] = rng.integers(0, NUM_CLASSES, noise.sum())
        videos.append((preds, gts))
    return videos


def score(videos: list[tuple[np.ndarray, np.ndarray]], names: list[int]) -> dict[str, float]:
    metrics = VSSMetrics(MetricConfig(num_classes=NUM_CLASSES))
    for k in names:
        preds, gts = videos[k]
        for start in range(0, len(gts), 7):  # chunks of 7 frames
            end = min(start + 7, len(gts))
            metrics.update(
                torch.from_numpy(preds[start:end]),
                torch.from_numpy(gts[start:end]),
                video=str(k),
                start=start,
                last=end == len(gts),
            )
    out = metrics.compute()
    return {k: v.item() for k, v in out.items() if k != "per_class_iou"}


def _worker(rank: int, port: int, shards: list[list[int]], queue) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=len(shards))
    try:
        queue.put((rank, score(make_videos(), shards[rank])))
    finally:
        dist.destroy_process_group()


def run_two_processes(shards: list[list[int]]) -> list[dict[str, float]]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, shards, queue)) for r in range(len(shards))]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return [results[r] for r in range(len(shards))]


def free_port() -> int:
    """A TCP port on localhost that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# slow: evaluate.py's 2-process equality test (test_evaluate_cli.py) covers it end to end
@pytest.mark.slow
def test_two_processes_equal_one_exactly():
    single = score(make_videos(), [0, 1, 2])
    ranks = run_two_processes([[0, 2], [1]])
    for result in ranks:
        assert result == single  # bitwise: fsum makes the means independent of the split


# slow: two processes (~15 s); the default run's 2-process sweep test covers DDP syncs
@pytest.mark.slow
def test_rank_without_data_still_syncs():
    single = score(make_videos(), [0, 1, 2])
    ranks = run_two_processes([[0, 1, 2], []])
    for result in ranks:
        assert result == single
