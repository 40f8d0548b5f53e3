"""Test-time refinement: majority vote of every model's predictions inside masklets (Eq. 1–2)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image
from torch import nn

from vssam2.masklets.base import MaskletSource
from vssam2.metrics import VSSMetrics
from vssam2.refine import majority_vote


class TestTimeRefinement(Callback):
    """Refines the predictions of each method with masklets and scores the refined maps.

    Works with any LightningModule whose ``test_step`` returns ``{method: (T, H, W) ids}``
    (e.g. :class:`~vssam2.module.PredictionReplay`). Masklets come from the batch
    (``batch["segments"]``, set by the datamodule's ``masklet_cache``) or, when ``source`` is
    given, are computed on the fly from ``batch["frames"]`` (and ``batch["gt"]`` for the
    oracle). Masklets are computed once per chunk and shared by every method. Votes are counted
    per chunk: set ``data.clip_len`` to the masklet window so a chunk is one window.

    After the test, ``pl_module.results`` holds the base row of each method followed by a
    ``SAM2-<method>`` row (``name_format``), so reports show the study's Table 1 / 2 shape;
    ``self.cost`` has the frames/s of masklet generation and of refinement.

    Args:
        source: masklet source to run on the fly; None = read ``batch["segments"]``.
        min_area: masklets with fewer pixels keep the base prediction.
        min_share: masklets whose winning class has a smaller vote share keep the base.
        name_format: row name of a refined method.
        write_dir: if set, refined predictions are written as PNGs of evaluation ids in
            ``<write_dir>/<row name>/<video>/<frame>.png`` (the result_submission layout).
        boundary_width, vc_lengths, vc_windows: metric settings; must match the module's so the
            base and refined rows are comparable.
    """

    def __init__(
        self,
        source: MaskletSource | None = None,
        min_area: int = 0,
        min_share: float = 0.0,
        name_format: str = "SAM2-{method}",
        write_dir: str | None = None,
        boundary_width: int = 5,
        vc_lengths: tuple[int, ...] = (8, 16),
        vc_windows: str = "scripts",
    ) -> None:
        self.source = source
        self.min_area = min_area
        self.min_share = min_share
        self.name_format = name_format
        self.write_dir = Path(write_dir) if write_dir else None
        self.metric_args = {"boundary_width": boundary_width, "vc_lengths": vc_lengths, "vc_windows": vc_windows}
        self.metrics = nn.ModuleDict()
        self.cost: dict[str, float] = {}
        self._seconds = {"masklets": 0.0, "refine": 0.0}
        self._frames = 0

    def _row(self, method: str) -> str:
        return self.name_format.format(method=method)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Rows exist up front on every rank, so a rank without data still joins the syncs.
        self.metrics = nn.ModuleDict(
            {self._row(m): VSSMetrics(**self.metric_args).to(pl_module.device) for m in getattr(pl_module, "methods", [])}
        )
        self._seconds = {"masklets": 0.0, "refine": 0.0}
        self._frames = 0

    def _segments(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.source is None:
            if "segments" not in batch:
                raise KeyError(
                    "TestTimeRefinement needs masklets: set data.masklet_cache (cached segment maps) "
                    "or give the callback a masklet source"
                )
            return batch["segments"]
        if "frames" not in batch:
            raise KeyError("TestTimeRefinement with a masklet source needs frames: set data.load_frames true")
        frames, start = batch["frames"].cpu(), int(batch["start"])
        if start == 0:
            self.source.begin_video(batch["video"], frames.shape[1], frames.shape[2])
        segments = self.source.add_chunk(frames, start, gt=batch["gt"].cpu())
        if bool(batch["last"]):
            self.source.end_video()
        return segments

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not isinstance(outputs, dict):
            raise TypeError("TestTimeRefinement needs test_step to return {method: (T, H, W) predicted ids}")
        t0 = time.perf_counter()
        segments = self._segments(batch)  # (T, H, W) int32
        t1 = time.perf_counter()
        refined_maps: dict[str, torch.Tensor] = {}
        for method, preds in outputs.items():
            row = self._row(method)
            if row not in self.metrics:
                self.metrics[row] = VSSMetrics(**self.metric_args).to(pl_module.device)
            refined = majority_vote(segments.to(preds.device), preds, min_area=self.min_area, min_share=self.min_share)
            self.metrics[row].update(
                refined, batch["gt"], video=batch["video"], start=int(batch["start"]), last=bool(batch["last"])
            )
            if self.write_dir is not None:
                self._write(row, batch, refined)
            refined_maps[row] = refined
        # Later callbacks (overlays) see the refined maps and the masklets of this chunk.
        batch["refined"] = refined_maps
        batch["segments"] = segments
        t2 = time.perf_counter()
        self._seconds["masklets"] += t1 - t0
        self._seconds["refine"] += t2 - t1
        self._frames += int(batch["gt"].shape[0])

    def _write(self, row: str, batch: dict[str, Any], refined: torch.Tensor) -> None:
        folder = self.write_dir / row / batch["video"]
        folder.mkdir(parents=True, exist_ok=True)
        for frame_id, labels in zip(batch["frame_ids"], refined.cpu().numpy().astype(np.uint8)):
            Image.fromarray(labels, mode="L").save(folder / f"{frame_id}.png")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # compute() syncs across ranks: every rank calls it, in the same (sorted) order.
        refined = {row: self.metrics[row].compute() for row in sorted(self.metrics)}
        base = dict(getattr(pl_module, "results", {}) or {})
        merged: dict[str, Any] = {}
        for method, values in base.items():
            merged[method] = values
            if self._row(method) in refined:
                merged[self._row(method)] = refined[self._row(method)]
        pl_module.results = merged
        pl_module.refinement_pairs = [(m, self._row(m)) for m in base if self._row(m) in refined]
        frames = max(self._frames, 1)
        self.cost = {
            "frames": self._frames,
            "masklets_fps": frames / self._seconds["masklets"] if self._seconds["masklets"] > 0 else float("inf"),
            "refine_fps": frames / self._seconds["refine"] if self._seconds["refine"] > 0 else float("inf"),
            "device": str(pl_module.device),
        }
        counts = getattr(pl_module, "counts", None)
        if isinstance(counts, dict):
            counts["refinement_cost"] = self.cost
