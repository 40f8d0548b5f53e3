"""Where a run's outputs go."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger


def run_directory(trainer: Trainer) -> Path:
    """The run's directory: the first logger's versioned folder, else ``default_root_dir``.

    Under DDP rank 0 broadcasts it, so every rank must call this, not only rank 0.
    """
    return Path(trainer.log_dir or trainer.default_root_dir)


def wandb_logger(trainer: Trainer) -> WandbLogger | None:
    """The trainer's W&B logger, if it has one."""
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
