"""Shared fixtures: environment without network, DDP state hygiene, tiny synthetic datasets, the
tiny sam2 test model, one torch thread for many-small-op tests, and the launcher of entry points /
DDP runs in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from vssam2.synthetic import SyntheticConfig, write_synthetic

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]

# Tiny, fast, but every video longer than 16 frames so mVC16 has windows.
TINY = SyntheticConfig(
    height=48, width=64, min_frames=18, max_frames=21, videos={"train": 2, "val": 3, "test": 1}, seed=0
)

DDP_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
)


@pytest.fixture(autouse=True)
def _isolated_run_env(monkeypatch: pytest.MonkeyPatch):
    """W&B disabled unless a test turns it on; no DDP state leaks between tests."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    for key in DDP_ENV:
        monkeypatch.delenv(key, raising=False)
    yield
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key in DDP_ENV:
        os.environ.pop(key, None)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset (VSPW, VIPSeg and simulated predictions), shared read-only by tests."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, TINY)
    return root


@pytest.fixture(scope="session")
def tiny_video_predictor():
    """sam2's video predictor on the tiny random-weight test config (seed 0), with the
    object-score head forced positive: random weights predict "no object" on most propagated
    frames, and tests of propagation and stitching need non-empty masks. Shared read-only."""
    import torch

    from vssam2.masklets.random_weights import keep_objects
    from vssam2.masklets.sam2_model import TINY_TEST_CONFIG, load_sam2_video_predictor

    torch.manual_seed(0)
    predictor = load_sam2_video_predictor(TINY_TEST_CONFIG, None)
    keep_objects(predictor, 10.0)
    return predictor


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread, restored after. Tests of many microsecond-long ops (the tiny
    SAM2 model, pooling probes) run 10-20x slower on a busy 2-core machine with a second thread:
    wake-ups cost more than they compute. Results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """:func:`one_thread` for a whole module (``pytestmark = pytest.mark.usefixtures(...)``)."""
    with one_thread():
        yield


def run_command(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``python ARGS`` from the repository root (an entry point, ``-m module``, or a DDP
    launch of one) and fails the test with the end of its output if it exits non-zero."""
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"python {' '.join(args[:3])} … exited {proc.returncode}:\n" + (
        proc.stdout[-3000:] + proc.stderr[-3000:]
    )
    return proc
