"""The one refine-and-score path: a stream of chunks in, base and refined metrics, a report out.

Every scorer of the project runs through :class:`ChunkScorer`: the prediction replay of
``evaluate.py`` (with or without test-time refinement), the masklet classifier's test, the
learned rule's test, and the sweeps. A chunk is what :class:`vssam2.datasets.VideoClipStream`
yields (one part of one video, frames in order)::

    {"video": str, "frame_ids": list[str], "start": int, "last": bool,
     "gt": (T, H, W) uint8, "frames": (T, H, W, 3) uint8 (optional),
     "segments": (T, H, W) int32, "masklet_table": MaskletTable (optional, from a masklet cache),
     "probs": {method: TopKProbs} (optional, from probability folders)}

plus the predictions to score, ``{method: (T, H, W) ids}`` — or (T, C, H, W) float logits
from a live model, whose arg-max is scored and whose top-k probabilities the probability
rules read. With a :class:`Refinement` each method also gets one refined row per
refinement rule (:mod:`vssam2.fusion.rules`; the majority vote of Eq. 1–2 by default),
scored with the same :class:`~vssam2.metrics.MetricConfig`; masklets are computed or read
once per chunk and shared by every method, votes are counted once per method and shared by
every rule. Results travel as a :class:`ScoreReport`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchmetrics import SumMetric

from vssam2.fusion.rules import MajorityVote, RefinementRule, RuleInputs
from vssam2.masklets.base import MaskletSource, MaskletTable
from vssam2.metrics import VSSMetrics
from vssam2.metrics.config import MetricConfig
from vssam2.refine import count_votes

if TYPE_CHECKING:
    from vssam2.probabilities import TopKProbs


@dataclass
class ChunkMasklets:
    """The masklets of one chunk, as a refinement reads them.

    Attributes:
        segments: (T, H, W) int32 segment map.
        table: the video's score table so far (None when the chunk carries none).
        origin: where the table came from, for errors (a file path or a source name).
    """

    segments: torch.Tensor
    table: MaskletTable | None
    origin: str


@dataclass
class Refinement:
    """How refined rows are made: masklets of each chunk, then one row per refinement rule.

    Votes are counted per chunk: stream with ``clip_len`` equal to the masklet window so that
    a chunk is one window, as in the study. Each method gets one refined row per rule: the
    majority vote's is ``name_format`` (``SAM2-<model>``), another rule's adds its name
    (``SAM2-<model> (gate)``).

    Attributes:
        source: masklet source run on the chunk's frames (and GT, for the oracle); None = the
            chunk's cached ``"segments"`` (and ``"masklet_table"``).
        rules: the refinement rules (:mod:`vssam2.fusion.rules`); default the majority vote.
        name_format: row name of a method refined by the majority vote (``{method}`` is replaced).
        write_dir: if set, refined maps are written as PNGs of evaluation ids in
            ``<write_dir>/<row name>/<video>/<frame>.png`` (the result_submission layout).
        logits_top_k: classes kept per pixel when a model hands logits instead of ids (the
            probability rules read them).
    """

    source: MaskletSource | None = None
    rules: Sequence[RefinementRule] = field(default_factory=lambda: [MajorityVote()])
    name_format: str = "SAM2-{method}"
    write_dir: str | None = None
    logits_top_k: int = 3

    def __post_init__(self) -> None:
        if "{method}" not in self.name_format:
            raise ValueError(f"refinement name_format must contain '{{method}}', got {self.name_format!r}")
        self.rules = list(self.rules)
        if not self.rules:
            raise ValueError("a refinement needs at least one rule")
        self._by_method: dict[str, list[RefinementRule]] = {}

    def rules_for(self, method: str) -> list[RefinementRule]:
        """The rules that refine ``method``, in order.

        Raises:
            ValueError: if two of them would give the same row.
        """
        if method not in self._by_method:  # asked for every method of every chunk: decided once
            rules = [rule for rule in self.rules if rule.applies_to(method)]
            names = [rule.row_name("x") for rule in rules]
            if len(set(names)) != len(names):
                raise ValueError(f"refinement rules of {method!r} need distinct names, got {[r.name for r in rules]}")
            self._by_method[method] = rules
        return self._by_method[method]

    def rows(self, method: str) -> list[str]:
        """Every refined row of ``method``, in rule order."""
        refined = self.name_format.format(method=method)
        return [rule.row_name(refined) for rule in self.rules_for(method)]

    def masklets(self, chunk: Mapping[str, Any]) -> ChunkMasklets:
        """The chunk's masklets: from the source, or the chunk's cached maps and table."""
        if self.source is None:
            if "segments" not in chunk:
                raise KeyError(
                    f"refinement of video {chunk.get('video')!r} needs masklets: stream a masklet cache "
                    "(data.masklet_cache) or give the refinement a masklet source"
                )
            origin = str(chunk.get("masklet_table_path", "the chunk's masklets"))
            return ChunkMasklets(chunk["segments"], chunk.get("masklet_table"), origin)
        if "frames" not in chunk:
            raise KeyError("refinement with a masklet source needs frames: set data.load_frames true")
        frames, start = chunk["frames"].cpu(), int(chunk["start"])
        if start == 0:
            self.source.begin_video(chunk["video"], frames.shape[1], frames.shape[2])
        segments = self.source.add_chunk(frames, start, gt=chunk["gt"].cpu())
        table = self.source.tracker.table()  # scores of every masklet seen so far
        if bool(chunk["last"]):
            self.source.end_video()
        return ChunkMasklets(segments, table, f"the {self.source.name!r} source's score table")

    def refine(
        self,
        chunk: Mapping[str, Any],
        method: str,
        masklets: ChunkMasklets,
        pred: torch.Tensor,
        probs: TopKProbs | None,
        num_classes: int,
        ignore_index: int,
    ) -> list[torch.Tensor]:
        """One refined map per rule of one method's prediction: one vote count, one paint per rule."""
        counts = count_votes(masklets.segments.to(pred.device), pred, num_classes, ignore_index)
        inputs = RuleInputs(
            counts,
            num_classes,
            ignore_index,
            frames=int(pred.shape[0]),
            start=int(chunk["start"]),
            video=str(chunk["video"]),
            table=masklets.table,
            table_origin=masklets.origin,
            probs=probs,
        )
        refined = []
        for rule in self.rules_for(method):
            paint = rule.decide(inputs)
            if paint.shape != (counts.row_ids.shape[0],):
                raise RuntimeError(
                    f"rule {rule.name!r} decided {tuple(paint.shape)} rows, the votes have {counts.row_ids.shape[0]}"
                )
            refined.append(counts.paint(paint.to(torch.int16)).to(pred.dtype).reshape(pred.shape))
        return refined

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
            {row: VSSMetrics(metrics) for m in self.methods for row in refinement.rows(m)}
            if refinement is not None
            else {}
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
        probs = dict(chunk.get("probs") or {})
        maps = {}
        for method in self.methods:
            maps[method], from_logits = self._ids(method, preds[method], chunk)
            if from_logits is not None:
                probs[method] = from_logits
        for method, metrics in self.base.items():
            metrics.update(maps[method], target, **where)
        segments = None
        if self.refinement is not None:
            t0 = time.perf_counter()
            masklets = self.refinement.masklets(chunk)
            segments = masklets.segments  # (T, H, W) int32
            t1 = time.perf_counter()
            for method in self.methods:
                refined = self.refinement.refine(
                    chunk,
                    method,
                    masklets,
                    maps[method],
                    probs.get(method),
                    self.config.num_classes,
                    self.config.ignore_index,
                )
                for row, refined_map in zip(self.refinement.rows(method), refined):
                    self.refined[row].update(refined_map, target, **where)
                    self.refinement.write(row, chunk, refined_map)
                    maps[row] = refined_map
            self._seconds["masklets"] += t1 - t0
            self._seconds["refine"] += time.perf_counter() - t1
            self._refined_frames += int(target.shape[0])
        self.frames.update(int(target.shape[0]))
        self.videos.update(int(where["last"]))
        return ScoredChunk(maps, segments)

    def _ids(self, method: str, pred: torch.Tensor, chunk: Mapping[str, Any]) -> tuple[torch.Tensor, TopKProbs | None]:
        """A method's (T, H, W) ids; from (T, C, H, W) float logits also its top-k probabilities."""
        if not pred.is_floating_point():
            return pred, None
        if pred.ndim != 4 or pred.shape[1] != self.config.num_classes:
            raise ValueError(
                f"method {method!r}, video {chunk.get('video')!r}: float predictions are taken as logits of shape "
                f"(T, {self.config.num_classes}, H, W), got {tuple(pred.shape)}"
            )
        from vssam2.probabilities import TopKProbs

        k = self.refinement.logits_top_k if self.refinement is not None else 1
        probs = TopKProbs.from_logits(pred, k)
        return probs.classes[:, 0].contiguous(), probs  # (T, H, W) uint8: the arg-max

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
                for row in self.refinement.rows(method):
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
