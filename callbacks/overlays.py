"""Overlay pictures of GT vs. predictions for a few frames: PNGs on disk and W&B segmentation masks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image

from callbacks.run_dir import run_directory, wandb_logger
from vssam2.labels import IGNORE_INDEX, vspw_classes
from vssam2.report import overlay_panel
from vssam2.scoring import ScoredChunk


class SegmentationOverlays(Callback):
    """Keeps a few frames of the first videos seen on rank 0 and shows GT and every prediction.

    Writes ``overlays/<video>_<frame>.png`` (frame | GT | each method | each refined method |
    masklets, blended; refined maps and masklets when a refinement ran) into the run
    directory and, with a WandbLogger, logs ``wandb.Image`` objects carrying W&B segmentation
    masks (ground truth and one mask per method, with class names) that the W&B UI toggles.

    Args:
        num_videos: videos to take frames from.
        frames_per_video: frames per video, spread over its first chunk.
        class_names: class name per id; the 124-class table by default.
    """

    def __init__(
        self, num_videos: int = 2, frames_per_video: int = 2, class_names: Sequence[str] | None = None
    ) -> None:
        self.num_videos = num_videos
        self.frames_per_video = frames_per_video
        self.class_names = list(class_names) if class_names is not None else list(vspw_classes().names)
        self._samples: list[dict[str, Any]] = []
        self._videos: set[str] = set()

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._samples, self._videos = [], set()

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.is_global_zero or "frames" not in batch or not isinstance(outputs, ScoredChunk):
            return
        video = batch["video"]
        if int(batch["start"]) != 0 or video in self._videos or len(self._videos) >= self.num_videos:
            return
        self._videos.add(video)
        length = batch["gt"].shape[0]
        segments = outputs.segments if outputs.segments is not None else batch.get("segments")
        for index in np.linspace(0, length - 1, self.frames_per_video).round().astype(int).tolist():
            self._samples.append(
                {
                    "video": video,
                    "frame": batch["frame_ids"][index],
                    "image": batch["frames"][index].cpu().numpy(),  # (H, W, 3) uint8
                    "gt": batch["gt"][index].cpu().numpy(),  # (H, W) uint8
                    "preds": {row: p[index].cpu().numpy() for row, p in outputs.maps.items()},  # base and refined
                    "segments": segments[index].cpu().numpy() if segments is not None else None,
                }
            )

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out_dir = run_directory(trainer) / "overlays"  # a collective call: every rank must make it
        if not trainer.is_global_zero or not self._samples:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for s in self._samples:
            panel = overlay_panel(s["image"], s["gt"], s["preds"], segments=s["segments"])
            Image.fromarray(panel).save(out_dir / f"{s['video']}_{s['frame']}.png")

        logger = wandb_logger(trainer)
        if logger is None:
            return
        import wandb

        labels = {i: name for i, name in enumerate(self.class_names)} | {IGNORE_INDEX: "ignore"}
        images = []
        for s in self._samples:
            masks = {"ground_truth": {"mask_data": s["gt"], "class_labels": labels}}
            masks |= {method: {"mask_data": p, "class_labels": labels} for method, p in s["preds"].items()}
            images.append(wandb.Image(s["image"], masks=masks, caption=f"{s['video']} / {s['frame']}"))
        logger.experiment.log({"test/overlays": images})
