"""The one refine-and-score path: a stream of chunks in, base and refined metrics, a report out.

Every scorer of the project runs through :class:`ChunkScorer`: the prediction replay of
``evaluate.py`` (with or without test-time refinement), the masklet classifier's test, and the
ablations. A chunk is what :class:`vssam2.datasets.VideoClipStream` yields (one part of one
video, frames in order)::

    {"video": str, "frame_ids": list[str], "start": int, "last": bool,
     "gt": (T, H, W) uint8, "frames": (T, H, W, 3) uint8 (optional),
     "segments": (T, H, W) int32 (optional, from a masklet cache)}

plus the predictions to score, ``{method: (T, H, W) ids}``. With a :class:`Refinement` each
method also gets a refined row (majority vote of its prediction inside the chunk's masklets,
Eq. 1–2), scored with the same :class:`~vssam2.metrics.MetricConfig`; masklets are computed or
read once per chunk and shared by every method. Results travel as a :class:`ScoreReport`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchmetrics import SumMetric

from vssam2.masklets.base import MaskletSource
from vssam2.metrics import VSSMetrics
from vssam2.metrics.config import MetricConfig
from vssam2.refine import majority_vote


@dataclass
class Refinement:
    """How refined rows are made: masklets of each chunk, then the majority vote (Eq. 1–2).

    Votes are counted per chunk: stream with ``clip_len`` equal to the masklet window so that
    a chunk is one window, as in the study.

    Attributes:
        source: masklet source run on the chunk's frames (and GT, for the oracle); None = the
            chunk's cached ``"segments"``.
        min_area: masklets with fewer pixels keep the base prediction.
        min_share: masklets whose winning class has a smaller vote share keep the base.
        name_format: row name of a refined method (``{method}`` is replaced).
        write_dir: if set, refined maps are written as PNGs of evaluation ids in
            ``<write_dir>/<row name>/<video>/<frame>.png`` (the result_submission layout).
    """

    source: MaskletSource | None = None
    min_area: int = 0
    min_share: float = 0.0
    name_format: str = "SAM2-{method}"
    write_dir: str | None = None

    def __post_init__(self) -> None:
        if "{method}" not in self.name_format:
            raise ValueError(f"refinement name_format must contain '{{method}}', got {self.name_format!r}")
        if self.min_area < 0 or not 0.0 <= self.min_share <= 1.0:
            raise ValueError(f"need min_area >= 0 and 0 <= min_share <= 1, got {self.min_area}, {self.min_share}")

    def row(self, method: str) -> str:
        """The refined row's name for ``method``."""
        return self.name_format.format(method=method)

    def segments(self, chunk: Mapping[str, Any]) -> torch.Tensor:
        """(T, H, W) int32 segment map of a chunk: from the source, or the chunk's cached maps."""
        if self.source is None:
            if "segments" not in chunk:
                raise KeyError(
                    f"refinement of video {chunk.get('video')!r} needs masklets: stream a masklet cache "
                    "(data.masklet_cache) or give the refinement a masklet source"
                )
            return chunk["segments"]
        if "frames" not in chunk:
            raise KeyError("refinement with a masklet source needs frames: set data.load_frames true")
        frames, start = chunk["frames"].cpu(), int(chunk["start"])
        if start == 0:
            self.source.begin_video(chunk["video"], frames.shape[1], frames.shape[2])
        segments = self.source.add_chunk(frames, start, gt=chunk["gt"].cpu())
        if bool(chunk["last"]):
            self.source.end_video()
        return segments

    def write(self, row: str, chunk: Mapping[str, Any], refined: torch.Tensor) -> None:
        """Writes one chunk of a refined row as 8-bit PNGs."""
        if self.write_dir is None:
            return
        folder = Path(self.write_dir) / row / chunk["video"]
        folder.mkdir(parents=True, exist_ok=True)
        for frame_id, labels in zip(chunk["frame_ids"], refined.cpu().numpy().astype(np.uint8)):
            Image.fromarray(labels, mode="L").save(folder / f"{frame_id}.png")


@dataclass
class ScoredChunk:
    """What scoring one chunk produced, for whoever shows it (overlays).

    Attributes:
        maps: ``{row: (T, H, W) ids}``: every scored prediction and every refined map.
        segments: (T, H, W) int32 masklets of the chunk when a refinement used them.
    """

    maps: dict[str, torch.Tensor]
    segments: torch.Tensor | None = None


@dataclass
class ScoreReport:
    """The results of one scoring pass.

    Attributes:
        rows: ``{row: {"mIoU", "WIoU", "mBIoU", "mVC<n>"..., "per_class_iou": (C,)}}``
            (fractions), in table order: each method, then its refined row.
        pairs: ``(base row, refined row)`` for every refined method.
        videos: videos scored (all ranks).
        frames: frames scored (all ranks).
        metrics: the metric configuration every row was scored with.
        cost: frames/s of masklets and of the vote, when a refinement ran (this rank).
        confusion: ``{row: (C, C + 1) int64}`` pixel confusion matrices a module asks to show.
    """

    rows: dict[str, dict[str, torch.Tensor]]
    pairs: list[tuple[str, str]] = field(default_factory=list)
    videos: int = 0
    frames: int = 0
    metrics: MetricConfig = field(default_factory=MetricConfig)
    cost: dict[str, Any] | None = None
    confusion: dict[str, torch.Tensor] = field(default_factory=dict)


class ChunkScorer(nn.Module):
    """Scores predictions chunk by chunk, with refined rows when given a :class:`Refinement`.

    Every row's metrics exist from the start on every rank, so a rank without data still joins
    the syncs of :meth:`compute`.

    Args:
        methods: names of the predictions each chunk brings.
        metrics: the metric configuration of every row.
        refinement: how to make refined rows; None = base rows only.
        score_base: also score the methods' own predictions (False when only refined rows are
            wanted, e.g. the later values of an ablation).
    """

    def __init__(
        self,
        methods: Sequence[str],
        metrics: MetricConfig = MetricConfig(),
        refinement: Refinement | None = None,
        score_base: bool = True,
    ) -> None:
        super().__init__()
        if not methods:
            raise ValueError("nothing to score: no prediction methods")
        if len(set(methods)) != len(methods):
            raise ValueError(f"prediction methods must be distinct, got {list(methods)}")
        self.methods = list(methods)
        self.config = metrics
        self.refinement = refinement
        self.score_base = score_base
        self.base = nn.ModuleDict({m: VSSMetrics(metrics) for m in self.methods} if score_base else {})
        self.refined = nn.ModuleDict(
            {refinement.row(m): VSSMetrics(metrics) for m in self.methods} if refinement is not None else {}
        )
        clash = set(self.base) & set(self.refined)
        if clash:
            raise ValueError(f"refined row names {sorted(clash)} are also prediction methods: change name_format")
        self.frames = SumMetric()
        self.videos = SumMetric()
        self._seconds = {"masklets": 0.0, "refine": 0.0}
        self._refined_frames = 0

    def update(self, chunk: Mapping[str, Any], preds: Mapping[str, torch.Tensor]) -> ScoredChunk:
        """Scores one chunk.

        Args:
            chunk: the chunk (``video``, ``start``, ``last``, ``gt``; ``frames`` or
                ``segments`` for a refinement).
            preds: ``{method: (T, H, W) ids}`` for every method of this scorer.

        Returns:
            The chunk's maps (predictions and refined rows) and masklets.
        """
        missing = [m for m in self.methods if m not in preds]
        if missing:
            raise KeyError(f"chunk of video {chunk.get('video')!r} has no predictions for {missing}; has {list(preds)}")
        target = chunk["gt"]  # (T, H, W) uint8
        where = {"video": chunk["video"], "start": int(chunk["start"]), "last": bool(chunk["last"])}
        maps = {m: preds[m] for m in self.methods}
        for method, metrics in self.base.items():
            metrics.update(maps[method], target, **where)
        segments = None
        if self.refinement is not None:
            t0 = time.perf_counter()
            segments = self.refinement.segments(chunk)  # (T, H, W) int32
            t1 = time.perf_counter()
            for method in self.methods:
                pred = maps[method]
                row = self.refinement.row(method)
                refined = majority_vote(
                    segments.to(pred.device),
                    pred,
                    num_classes=self.config.num_classes,
                    ignore_index=self.config.ignore_index,
                    min_area=self.refinement.min_area,
                    min_share=self.refinement.min_share,
                )
                self.refined[row].update(refined, target, **where)
                self.refinement.write(row, chunk, refined)
                maps[row] = refined
            self._seconds["masklets"] += t1 - t0
            self._seconds["refine"] += time.perf_counter() - t1
            self._refined_frames += int(target.shape[0])
        self.frames.update(int(target.shape[0]))
        self.videos.update(int(where["last"]))
        return ScoredChunk(maps, segments)

    def compute(self) -> ScoreReport:
        """Syncs and computes every row (a collective call under DDP: every rank calls it)."""
        base = {m: metrics.compute() for m, metrics in self.base.items()}
        refined = {row: metrics.compute() for row, metrics in self.refined.items()}
        rows: dict[str, dict[str, torch.Tensor]] = {}
        pairs: list[tuple[str, str]] = []
        for method in self.methods:
            if method in base:
                rows[method] = base[method]
            if self.refinement is not None:
                row = self.refinement.row(method)
                rows[row] = refined[row]
                if method in base:
                    pairs.append((method, row))
        cost = None
        if self.refinement is not None:
            seconds = self._seconds
            cost = {
                "frames": self._refined_frames,
                "masklets_fps": self._refined_frames / seconds["masklets"] if seconds["masklets"] > 0 else float("inf"),
                "refine_fps": self._refined_frames / seconds["refine"] if seconds["refine"] > 0 else float("inf"),
                "device": str(self.frames.device),
            }
        return ScoreReport(
            rows=rows,
            pairs=pairs,
            videos=int(self.videos.compute().item()),
            frames=int(self.frames.compute().item()),
            metrics=self.config,
            cost=cost,
        )

    def reset(self) -> None:
        """Clears every row and count."""
        for metrics in [*self.base.values(), *self.refined.values()]:
            metrics.reset()
        self.frames.reset()
        self.videos.reset()
        self._seconds = {"masklets": 0.0, "refine": 0.0}
        self._refined_frames = 0


def score_stream(chunks: Iterable[Mapping[str, Any]], scorer: ChunkScorer) -> ScoreReport:
    """Scores every chunk of a stream with the predictions it carries (``chunk["preds"]``)."""
    with torch.inference_mode():
        for chunk in chunks:
            scorer.update(chunk, chunk["preds"])
    return scorer.compute()
