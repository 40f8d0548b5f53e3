"""Computing the masklets of a split into the masklet cache (:mod:`vssam2.masklets.cache`).

``python -m vssam2.masklets`` runs :func:`compute_cache` on one rank's share of a split; every
rank writes disjoint video folders, so no communication is needed, and an interrupted run
resumes where it stopped (finished videos are skipped, an unfinished one is recomputed).
With a SAM2 source and ``features`` the same pass also writes the I-SAM2 feature cache
(:mod:`vssam2.features.one_pass`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from vssam2.datasets.index import VideoEntry
from vssam2.datasets.reading import load_frames_range
from vssam2.datasets.streaming import VideoClipStream, chunk_bounds, rank_from_env
from vssam2.masklets.base import MaskletSource
from vssam2.masklets.cache import MaskletCache, VideoWriter, cache_config

if TYPE_CHECKING:  # the feature side imports sam2 only when asked for
    from vssam2.features.one_pass import OnePassFeatures, OnePassFeatureWriter


@dataclass
class CacheRunSummary:
    """What one rank did in :func:`compute_cache`.

    Attributes:
        directory: the cache folder.
        rank: this process's rank.
        world_size: number of processes.
        videos: this rank's share of the split (video names, split order).
        computed: videos computed in this run.
        skipped: videos skipped because they were already complete.
        frames: frames computed in this run.
        seconds: wall time of the run (reading included).
        feature_directory: the feature cache folder written in the same pass (None without features).
        features_only: videos whose masklets were already cached and whose feature files were
            computed from them (in ``skipped`` neither, nor in ``computed``).
        features_only_frames: frames of ``features_only`` (encoder and pooling only).
        feature_rows: masklet vectors written to the feature cache.
    """

    directory: Path
    rank: int
    world_size: int
    videos: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    feature_directory: Path | None = None
    features_only: list[str] = field(default_factory=list)
    features_only_frames: int = 0
    feature_rows: int = 0

    @property
    def frames_per_second(self) -> float:
        """Computed frames per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        text = (
            f"[rank {self.rank}/{self.world_size}] masklet cache {self.directory}: "
            f"{len(self.computed)} videos computed "
            f"({self.frames} frames, {self.frames_per_second:.2f} frames/s), {len(self.skipped)} skipped as done, "
            f"{len(self.videos)} videos in this rank's share"
        )
        if self.feature_directory is not None:
            text += (
                f"\n[rank {self.rank}/{self.world_size}] feature cache {self.feature_directory}: "
                f"{self.feature_rows} masklet vectors written, {len(self.features_only)} videos "
                f"({self.features_only_frames} frames) pooled over masklets already cached"
            )
        return text


def _prefetched(
    tasks: Sequence[tuple[VideoEntry, int, int]], load: Callable[[VideoEntry, int, int], dict[str, Any]], depth: int = 2
) -> Iterator[tuple[VideoEntry, int, int, dict[str, Any]]]:
    """Yields ``(video, start, stop, chunk)`` in order, reading up to ``depth`` chunks ahead in a thread."""
    pending: deque[tuple[tuple[VideoEntry, int, int], Future]] = deque()
    remaining = iter(tasks)
    with ThreadPoolExecutor(max_workers=1) as pool:

        def submit() -> None:
            task = next(remaining, None)
            if task is not None:
                pending.append((task, pool.submit(load, *task)))

        for _ in range(max(1, depth)):
            submit()
        try:
            while pending:
                task, future = pending.popleft()
                submit()
                yield (*task, future.result())
        finally:
            for _, future in pending:
                future.cancel()


def compute_cache(
    source: MaskletSource,
    data: Any,
    split: str,
    cache_root: str | Path = "cache/masklets",
    max_videos: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    features: OnePassFeatures | None = None,
) -> CacheRunSummary:
    """Computes the masklets of one rank's share of a split into the cache.

    Videos are assigned whole to ranks exactly as evaluation assigns them
    (:class:`vssam2.datasets.VideoClipStream`, balanced by frame count over the whole split), so
    ranks write disjoint video folders and need no communication. Complete videos (``.done``
    under this key) are skipped; an incomplete one is recomputed from scratch.

    With ``features`` (a SAM2 source only), the pooled image-encoder features of every
    video's masklets go into the feature cache ``python -m vssam2.features`` would write with
    the equivalent ``SAM2Encoder`` (:mod:`vssam2.features.one_pass`), each video's file
    right after its masklets are finished. A video is then skipped only when both are done;
    one whose masklets are done but whose feature file is missing gets it from the cached
    masklets (an encoder pass over its frames; the masklet cache is not touched).

    Args:
        source: the masklet source.
        data: the dataset (:class:`vssam2.datasets.VideoSplits`, e.g. a VSPW / VIPSeg data
            module): root, layout, ``clip_len`` (frames per chunk fed to the source) and
            ``num_classes``.
        split: split to compute.
        cache_root: parent folder of the cache folders.
        max_videos: only the first ``max_videos`` videos of the split (before sharding).
        rank: this process's rank; default ``RANK`` from the environment (0).
        world_size: number of processes; default ``WORLD_SIZE`` from the environment (1).
        progress: show tqdm bars (videos and frames; rank 0 only).
        features: the feature cache to write in the same pass (None: masklets only).

    Returns:
        What this rank computed and skipped.

    Raises:
        TypeError: ``features`` with a source that is not a SAM2 source.
        ValueError: ``features`` that the source cannot serve (see
            :meth:`vssam2.features.one_pass.OnePassFeatures.bind`).
    """
    env_rank, env_world = rank_from_env()
    rank = env_rank if rank is None else int(rank)
    world_size = env_world if world_size is None else int(world_size)
    if max_videos is not None and max_videos < 1:
        raise ValueError(f"max_videos must be >= 1 or None, got {max_videos}")
    layout = data.layout
    config = cache_config(source, layout.name, data.clip_len, data.num_classes)
    cache = MaskletCache.create(cache_root, config)
    pooler: OnePassFeatureWriter | None = None
    if features is not None:
        pooler = features.bind(source, data, cache, split)
    videos = list(data.index(split, with_preds=False).videos)[:max_videos]
    stream = VideoClipStream(
        videos,
        layout=layout,
        clip_len=data.clip_len,
        load_frames=True,
        num_classes=data.num_classes,
        rank=rank,
        world_size=world_size,
    )
    summary = CacheRunSummary(cache.directory, rank, world_size, videos=[video.name for video in stream.videos])
    if pooler is not None:
        summary.feature_directory = pooler.directory
    todo: list[VideoEntry] = []
    pool_only: set[str] = set()  # masklets cached, feature file missing
    for video in stream.videos:
        if not cache.is_done(video.name):
            todo.append(video)
        elif pooler is not None and not pooler.is_done(video.name):
            todo.append(video)
            pool_only.add(video.name)
        else:
            summary.skipped.append(video.name)
    tasks = [(video, start, stop) for video in todo for start, stop in chunk_bounds(video.num_frames, data.clip_len)]

    def load(video: VideoEntry, start: int, stop: int) -> dict[str, Any]:
        chunk = load_frames_range(video, start, stop, layout, data.num_classes, load_frames=True, load_preds=False)
        if video.name in pool_only:
            size = tuple(chunk["gt"].shape[1:])
            chunk["segments"] = cache.read_segments(video.name, video.frame_ids[start:stop], size)
        return chunk

    show = progress and rank == 0
    if show:
        tqdm.write(
            f"masklet cache {cache.directory}: split {split!r}, rank {rank}/{world_size}: {len(stream.videos)} videos, "
            f"{len(summary.skipped)} already done, {len(todo)} to compute"
            + (f" ({len(pool_only)} of them features only)" if pool_only else "")
        )
    video_bar = tqdm(
        total=len(stream.videos),
        initial=len(summary.skipped),
        desc=f"masklets {split} (rank {rank}/{world_size})",
        unit="video",
        disable=not show,
        dynamic_ncols=True,
    )
    frame_bar = tqdm(
        total=sum(video.num_frames for video in todo), desc="frames", unit="frame", disable=not show, leave=False
    )
    start_time = time.perf_counter()
    writer: VideoWriter | None = None
    if pooler is not None:
        pooler.attach()
    try:
        with torch.inference_mode():
            for video, start, stop, chunk in _prefetched(tasks, load):
                if start == 0:
                    frame_bar.set_postfix_str(video.name)
                    if pooler is not None:
                        pooler.begin_video(video.name, video.num_frames)
                if video.name in pool_only:
                    pooler.encode(chunk["frames"], start)
                    pooler.add_chunk(start, chunk["segments"], chunk["gt"])
                    frame_bar.update(stop - start)
                    summary.features_only_frames += stop - start
                    if stop == video.num_frames:
                        summary.feature_rows += pooler.finish_video()
                        summary.features_only.append(video.name)
                        video_bar.update(1)
                    continue
                if start == 0:
                    height, width = chunk["gt"].shape[1:]
                    if pooler is not None:
                        pooler.discard(video.name)  # pooled over the maps about to be replaced
                    writer = cache.writer(video.name, height, width)
                    source.begin_video(video.name, height, width)
                segments = source.add_chunk(chunk["frames"], start, gt=chunk["gt"])
                writer.write(video.frame_ids[start:stop], segments.cpu())
                if pooler is not None:
                    pooler.add_chunk(start, segments, chunk["gt"])
                frame_bar.update(stop - start)
                summary.frames += stop - start
                if stop == video.num_frames:
                    writer.finish(source.end_video())
                    # After the masklets' .done: a feature file exists only beside the masklets it pools.
                    if pooler is not None:
                        summary.feature_rows += pooler.finish_video()
                    summary.computed.append(video.name)
                    video_bar.update(1)
    finally:
        if pooler is not None:
            pooler.detach()
        frame_bar.close()
        video_bar.close()
        summary.seconds = time.perf_counter() - start_time
    return summary
