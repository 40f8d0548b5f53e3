"""Shared fixtures: environment without network, DDP state hygiene, tiny synthetic datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch.distributed as dist

from vssam2.synthetic import SyntheticConfig, write_synthetic

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# Tiny, fast, but every video longer than 16 frames so mVC16 has windows.
TINY = SyntheticConfig(height=48, width=64, min_frames=18, max_frames=21, videos={"train": 2, "val": 3, "test": 1}, seed=0)

DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK")


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
