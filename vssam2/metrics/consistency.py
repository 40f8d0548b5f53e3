"""Video consistency mVC_n (Eq. 4), computed streaming over ordered chunks of each video."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

import torch
from torchmetrics import Metric

from vssam2.labels import IGNORE_INDEX, NUM_CLASSES
from vssam2.metrics.functional import (
    StableRuns,
    VCWindows,
    advance_stable_runs,
    check_pair,
    check_window_lengths,
    exact_mean,
)

WINDOW_COUNTS: tuple[VCWindows, ...] = get_args(VCWindows)


@dataclass
class _OpenVideo:
    """What a video carries into its next chunk."""

    runs: StableRuns
    pending: dict[int, tuple[int, int]]  # ("scripts") per n, counts of the window ending at the last frame


class VideoConsistency(Metric):
    """mVC_n: VSPW's video consistency, as the CFFM / MRCFA / TV3S scripts compute it.

    In each window of n consecutive frames, a pixel is GT-stable if its GT is equal over the
    n frames and pred-stable likewise (ignore pixels are not masked); the window score is
    |GT-stable ∧ pred-stable| / |GT-stable|. mVC_n is the mean over all windows of all videos
    pooled (windows without GT-stable pixels are skipped, as ``np.nanmean`` does).

    Videos arrive as ordered chunks (``update`` per chunk, with the index of its first frame).
    Per open video the metric keeps its last frame and, per pixel, how many frame pairs in a
    row have been stable (capped at the longest n − 1), so each frame is compared once with the
    previous one whatever n and the chunking: any chunking gives the same result as whole
    videos. Several window lengths (``n=(8, 16)``) share that one pass. A video must be scored
    entirely on one process: shard data by whole videos under DDP (the window scores, not the
    frames, are synced).

    Args:
        n: window length in frames (8 and 16 in the paper), or several lengths scored together.
        windows: "scripts" — T−n windows per video (starts 0…T−n−1, the reference scripts);
            "paper" — T−n+1 windows (Eq. 4 as printed).
        num_classes: number of classes C (for input validation).
        ignore_index: ignore id.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        n: int | Sequence[int] = 8,
        windows: VCWindows = "scripts",
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.single = isinstance(n, int)
        self.lengths = tuple(dict.fromkeys(check_window_lengths((n,) if self.single else n)))
        if windows not in WINDOW_COUNTS:
            raise ValueError(f"windows must be one of {WINDOW_COUNTS}, got {windows!r}")
        self.n = n
        self.windows = windows
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        # The scripts never let a window end on a video's last frame, so a window is scored
        # only once the frame after it has arrived.
        self._lag = windows == "scripts"
        self.set_dtype(torch.float64)
        for length in self.lengths:
            self.add_state(f"scores_{length}", default=[], dist_reduce_fx="cat")
        self._open: dict[str, _OpenVideo] = {}
        self._finished: set[str] = set()

    def update(
        self,
        preds: torch.Tensor,
        target: torch.Tensor,
        video: str,
        start: int = 0,
        last: bool = False,
        validate: bool = True,
    ) -> None:
        """Adds one chunk of a video.

        Args:
            preds: (L, H, W) predicted ids of consecutive frames.
            target: (L, H, W) GT ids of the same frames.
            video: video id; chunks of one video must arrive in frame order.
            start: index in the video of the chunk's first frame.
            last: True for a video's final chunk (frees its carried frames).
            validate: check the label ids (False when the caller just checked them).

        Raises:
            ValueError: chunks out of order, a chunk after the video's last one, a frame size
                that changes within a video, or invalid label maps.
        """
        preds, target = check_pair(preds, target, self.num_classes, self.ignore_index, validate)
        self.check_chunk(video, start, tuple(target.shape[1:]))
        open_video = self._open.get(video)
        runs = open_video.runs if open_video is not None else None
        runs, counts = advance_stable_runs(runs, preds, target, self.lengths)
        pending: dict[int, tuple[int, int]] = {}
        for length, windows in counts.items():
            if open_video is not None and length in open_video.pending:
                windows.insert(0, open_video.pending[length])
            # "scripts": a window is scored only once a later frame shows it does not end the video.
            if self._lag and windows:
                pending[length] = windows.pop()
            if windows:
                both, gt_stable = torch.tensor(windows, dtype=torch.float64).unbind(1)
                keep = gt_stable > 0
                getattr(self, f"scores_{length}").append(both[keep] / gt_stable[keep])
        if last:
            self._open.pop(video, None)
            self._finished.add(video)
        elif runs is not None:
            # Own copies: the caller's chunk may be a view into a buffer it reuses.
            runs.preds, runs.target = runs.preds.clone(), runs.target.clone()
            self._open[video] = _OpenVideo(runs, pending)

    def check_chunk(self, video: str, start: int, frame_size: tuple[int, ...]) -> None:
        """Raises ValueError unless a chunk of ``video`` starting at frame ``start`` with frames
        of ``frame_size`` (H, W) may come next; changes nothing (callers that update several
        metrics check first, so that a refused chunk updates none of them).
        """
        if video in self._finished:
            raise ValueError(f"video {video!r}: got a chunk at frame {start} after its last chunk")
        open_video = self._open.get(video)
        runs = open_video.runs if open_video is not None else None
        expected = runs.frames if runs is not None else 0
        if start != expected:
            raise ValueError(
                f"video {video!r}: chunk starts at frame {start} but frame {expected} was expected next "
                "(chunks of a video must arrive in order, each frame once)"
            )
        if runs is not None and tuple(runs.target.shape) != tuple(frame_size):
            raise ValueError(
                f"video {video!r}: frame size changed from {tuple(runs.target.shape)} "
                f"to {tuple(frame_size)} at frame {start}"
            )

    def compute(self) -> torch.Tensor | dict[int, torch.Tensor]:
        """Returns mVC_n in [0, 1] (NaN when no window had GT-stable pixels); with several
        lengths, a dict {n: mVC_n}."""
        values = {length: exact_mean(getattr(self, f"scores_{length}")) for length in self.lengths}
        return values[self.lengths[0]] if self.single else values

    def reset(self) -> None:
        """Clears the scores and every open video."""
        super().reset()
        self._open = {}
        self._finished = set()

    def forward(self, *args, **kwargs):  # noqa: D102
        raise RuntimeError(
            "VideoConsistency has no per-batch value (windows span chunks): call update() per chunk, then compute()"
        )
