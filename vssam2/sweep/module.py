"""MaskletSweep: an ablation (Tables 4–7, the source comparison) as one Lightning test run.

    python evaluate.py test --config configs/ablation/window_synthetic.yaml
    python evaluate.py test --config configs/ablation/window_vspw.yaml --trainer.devices 8 --trainer.strategy ddp

The data module streams the split once; whole videos are sharded across ranks (as every
evaluation shards them). For each video and each distinct masklet configuration of the sweep,
the rank that owns the video reads the masklets from the cache when the video is complete
there, and otherwise computes them inside the run — all missing configurations together, in
one :class:`~vssam2.masklets.sharing.SourceSet` (frames decoded once, one SAM2 encoder pass
per frame, one prompt decoding per keyframe) — and writes them to the cache (atomic, ``.done``
last), so a killed run resumes at the first unfinished video and nothing finished is computed
twice. Every point is then voted per ``clip_len`` frames (its window) and scored on the one
refine-and-score path (:class:`~vssam2.scoring.ChunkScorer`); the base predictions are scored
once. Metric states are sums over videos, synced at the end of the epoch, so 1 and N
processes give identical tables.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from torch import nn

from vssam2.masklets.base import MaskletSource, MaskletTable
from vssam2.masklets.cache import MaskletCache, VideoWriter
from vssam2.masklets.sharing import SourceSet
from vssam2.metrics.config import MetricConfig
from vssam2.scoring import ChunkScorer, Refinement
from vssam2.sweep.grid import SweepPoint, expand_grid
from vssam2.sweep.rechunk import Rechunker
from vssam2.sweep.report import SweepReport, sweep_rows

#: Row name of a point's refined method inside its scorer.
REFINED_FORMAT = "{method}@refined"


class MaskletSweep(LightningModule):
    """Sweeps masklet parameters, sources and refinement rules; refines and scores every point.

    Args:
        grid: ``{parameter: [values]}`` (:mod:`vssam2.sweep.grid`): one parameter, several
            (a grid, first varies slowest), ``source`` (values: source configs with an
            optional ``label``), ``refinement.min_area`` / ``refinement.min_share`` and
            ``refinement.rule`` (refinement rule configs, optional ``label``).
        source: the masklet source the source parameters are set on (not with ``source`` in
            the grid unless other source parameters are swept too: they are then set on
            every swept source).
        methods: prediction sources to refine (default: every source of the data module).
        min_area: majority vote: masklets with fewer pixels keep the base prediction (where
            the grid does not sweep it).
        min_share: majority vote: smallest winning share (where the grid does not sweep it).
        cache_root: parent folder of the masklet caches (on a filesystem every rank sees).
        tie_clip_len: vote per window (``clip_len = window``) for windowed sources, as the
            study does; other sources vote per ``data.clip_len`` frames.
        share: compute the missing configurations of a video together, sharing frames, the
            SAM2 encoder and the prompt decoding (False: one after another; same maps).
        metrics: the metric configuration of every row.
    """

    def __init__(
        self,
        grid: dict[str, list[Any]],
        source: MaskletSource | None = None,
        methods: list[str] | None = None,
        min_area: int = 0,
        min_share: float = 0.0,
        cache_root: str = "cache/masklets",
        tie_clip_len: bool = True,
        share: bool = True,
        metrics: MetricConfig = MetricConfig(),
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["source"])
        self.grid = {str(k): list(v) for k, v in grid.items()}
        self.source = source
        self.methods: list[str] = list(methods or [])
        self.min_area = int(min_area)
        self.min_share = float(min_share)
        self.cache_root = str(cache_root)
        self.tie_clip_len = bool(tie_clip_len)
        self.share = bool(share)
        self.metric_config = metrics
        self.points: list[SweepPoint] = []
        self.caches: dict[str, MaskletCache] = {}
        self.sweep_report: SweepReport | None = None
        self.split: str = ""

    # ------------------------------------------------------------------ setup

    def setup(self, stage: str) -> None:
        """Expands the grid, opens the caches, builds one scorer per point."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "eval_dataset"):
            raise ValueError("MaskletSweep needs a VideoSplits data module (e.g. datamodules.VSPWDataModule)")
        if getattr(datamodule, "masklet_cache", None) is not None:
            raise ValueError(
                "MaskletSweep makes and reads its own masklet caches (one per point, under model.cache_root): "
                "leave data.masklet_cache unset"
            )
        names = list(datamodule.pred_names)
        self.methods = self.methods or names
        unknown = [m for m in self.methods if m not in names]
        if unknown:
            raise ValueError(f"methods {unknown} are not prediction sources of the data module (it has {names})")
        if not self.methods:
            raise ValueError("no prediction sources to refine: set data.init_args.pred_roots")
        if self.metric_config.num_classes != datamodule.num_classes:
            raise ValueError(
                f"model.metrics.num_classes {self.metric_config.num_classes} != the dataset's "
                f"num_classes {datamodule.num_classes}"
            )
        self.split = datamodule.val_split if stage == "validate" else datamodule.test_split
        self.points = expand_grid(
            self.grid,
            self.source,
            datamodule.clip_len,
            datamodule.layout.name,
            datamodule.num_classes,
            self.min_area,
            self.min_share,
            self.tie_clip_len,
        )
        self.caches = {}
        for point in self.points:
            if point.masklet_key not in self.caches:
                self.caches[point.masklet_key] = MaskletCache.create(self.cache_root, point.config)
        # The source that computes each configuration (points differing only in the rule share it).
        self._makers: dict[str, MaskletSource] = {}
        for point in self.points:
            self._makers.setdefault(point.masklet_key, point.source)
        videos = [video.name for video in datamodule.index(self.split).videos]
        missing = any(not cache.is_done(v) for cache in self.caches.values() for v in videos)
        datamodule.load_frames = missing  # frames are decoded only when some masklets are computed
        self.base_scorer = ChunkScorer(self.methods, self.metric_config).to(self.device)
        self.point_scorers = nn.ModuleList(
            ChunkScorer(
                self.methods,
                self.metric_config,
                Refinement(rules=[p.refinement_rule()], name_format=REFINED_FORMAT),
                score_base=False,
            )
            for p in self.points
        ).to(self.device)
        # Points that vote on the same masklets with the same chunks share one re-chunker.
        self._groups: dict[tuple[str, int], list[int]] = {}
        for k, point in enumerate(self.points):
            self._groups.setdefault((point.masklet_key, point.clip_len), []).append(k)
        self._counts = {key: {"computed": 0, "read": 0} for key in self.caches}
        self._compute_seconds = 0.0
        self._computed_frames = 0
        self._video: str | None = None

    # ------------------------------------------------------------------ per chunk

    def _begin_video(self, batch: Mapping[str, Any]) -> None:
        video = batch["video"]
        height, width = batch["gt"].shape[1:]
        self._video = video
        self._writers: dict[str, VideoWriter] = {}
        self._reading: list[str] = []
        computing: list[str] = []
        self._tables: dict[str, tuple[MaskletTable, str]] = {}
        for key, cache in self.caches.items():
            if cache.is_done(video):  # its files are checked on the first read (read_segments)
                self._reading.append(key)
                self._tables[key] = (cache.read_table(video), str(cache.table_path(video)))
                self._counts[key]["read"] += 1
            else:
                computing.append(key)
                self._counts[key]["computed"] += 1
        self._computing = computing
        self._set: SourceSet | None = None
        if computing:
            if "frames" not in batch:
                raise RuntimeError(f"video {video!r} needs masklets computed but the data module loaded no frames")
            for key in computing:
                self._writers[key] = self.caches[key].writer(video, height, width)
            self._set = SourceSet([self._makers[key] for key in computing], share=self.share)
            self._set.begin_video(video, height, width)
        self._rechunkers = {group: Rechunker(group[1]) for group in self._groups}

    def _segments(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """(T, H, W) int32 masklets of the chunk for every configuration: computed or read."""
        video, frame_ids = batch["video"], list(batch["frame_ids"])
        size = tuple(batch["gt"].shape[1:])
        out: dict[str, torch.Tensor] = {}
        if self._set is not None:
            t0 = time.perf_counter()
            maps = self._set.add_chunk(batch["frames"].cpu(), int(batch["start"]), gt=batch["gt"].cpu())
            for key, segments in zip(self._computing, maps):
                self._writers[key].write(frame_ids, segments)
                out[key] = segments
                source = self._makers[key]
                self._tables[key] = (source.tracker.table(), f"the {source.name!r} source's score table")
            if bool(batch["last"]):
                for key, table in zip(self._computing, self._set.end_video()):
                    self._writers[key].finish(table)
                self._set.release()
            self._compute_seconds += time.perf_counter() - t0
            self._computed_frames += len(frame_ids)
        for key in self._reading:
            out[key] = self.caches[key].read_segments(video, frame_ids, size)
        return out

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if int(batch["start"]) == 0:
            self._begin_video(batch)
        elif batch["video"] != self._video:
            raise RuntimeError(f"chunk of video {batch['video']!r} arrived in the middle of video {self._video!r}")
        segments = self._segments(batch)
        preds = {m: batch["preds"][m] for m in self.methods}
        self.base_scorer.update(batch, preds)
        for (key, clip_len), members in self._groups.items():
            carried = {
                "video": batch["video"],
                "start": batch["start"],
                "last": batch["last"],
                "frame_ids": list(batch["frame_ids"]),
                "gt": batch["gt"],
                "preds": preds,
                "segments": segments[key],
                "masklet_table": self._tables[key][0],
                "masklet_table_path": self._tables[key][1],
            }
            for chunk in self._rechunkers[(key, clip_len)].push(carried):
                for k in members:
                    self.point_scorers[k].update(chunk, chunk["preds"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.test_step(batch, batch_idx)

    # ------------------------------------------------------------------ results

    def _total(self, value: float, op: Literal["sum", "max"] = "sum") -> float:
        """``value`` summed (or maxed) over the ranks."""
        tensor = torch.tensor(float(value), dtype=torch.float64, device=self.device)
        if self.trainer.world_size > 1:
            if op == "max":
                tensor = self.all_gather(tensor).max()
            else:
                tensor = self.trainer.strategy.reduce(tensor, reduce_op="sum")
        return float(tensor)

    def _finish_epoch(self) -> None:
        base = self.base_scorer.compute()
        refined = [scorer.compute() for scorer in self.point_scorers]
        counts = {
            key: {name: int(self._total(n)) for name, n in values.items()} for key, values in self._counts.items()
        }
        computed_frames = self._total(self._computed_frames)
        seconds = self._total(self._compute_seconds, op="max")
        names = [{m: scorer.refinement.rows(m)[0] for m in self.methods} for scorer in self.point_scorers]
        rows = sweep_rows(self.points, self.methods, base, refined, names)
        self.sweep_report = SweepReport(
            grid=self.grid,
            split=self.split,
            points=[
                {
                    "label": p.label,
                    "values": p.values,
                    "masklet_key": p.masklet_key,
                    "cache_dir": str(self.caches[p.masklet_key].directory),
                    "clip_len": p.clip_len,
                    "min_area": p.min_area,
                    "min_share": p.min_share,
                    "rule": p.refinement_rule().config(),
                    "source": {"class": type(p.source).__name__, **p.config["source"]},
                    "videos_computed": counts[p.masklet_key]["computed"],
                    "videos_read": counts[p.masklet_key]["read"],
                }
                for p in self.points
            ],
            rows=rows,
            methods=list(self.methods),
            metrics=self.metric_config,
            videos=base.videos,
            frames=base.frames,
            cost={
                "computed_frames": int(computed_frames),
                "compute_seconds_slowest_rank": seconds,
                "share": self.share,
                "world_size": int(self.trainer.world_size),
            },
        )
        self.base_scorer.reset()
        for scorer in self.point_scorers:
            scorer.reset()

    def on_test_epoch_end(self) -> None:
        self._finish_epoch()

    def on_validation_epoch_end(self) -> None:
        self._finish_epoch()
