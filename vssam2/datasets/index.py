"""Split indexing: which videos a split holds, their frames, masks and predictions.

Indexing is cheap on purpose (split file plus one directory listing per folder, nothing
decoded), so every process can run it at setup and all ranks agree on the same video list.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vssam2.datasets.layout import PRED_SUFFIX, VSPW_LAYOUT, DatasetLayout
from vssam2.errors import DataError
from vssam2.probabilities import PROB_SUFFIX

# How many missing/extra files a message lists before summarising with a count.
_MAX_LISTED = 3


@dataclass(frozen=True)
class VideoEntry:
    """One indexed video: its ordered frame ids and the folders holding its files.

    Folders plus ids (not one path per file) keep the entry small when it is pickled into
    DataLoader workers.

    Attributes:
        name: video name as listed in the split file.
        frame_ids: file stems in frame order (natural sort, so ``2`` precedes ``10``).
        frame_dir: folder of the RGB frames.
        mask_dir: folder of the ground-truth masks.
        pred_dirs: prediction folder of this video per method name, in method order.
        prob_dirs: probability folder of this video per method name (methods with one only).
        frame_suffix: suffix of frame files.
        mask_suffix: suffix of mask files.
    """

    name: str
    frame_ids: tuple[str, ...]
    frame_dir: Path
    mask_dir: Path
    pred_dirs: Mapping[str, Path] = field(default_factory=dict)
    prob_dirs: Mapping[str, Path] = field(default_factory=dict)
    frame_suffix: str = ".jpg"
    mask_suffix: str = ".png"

    @property
    def num_frames(self) -> int:
        """Number of frames of the whole video."""
        return len(self.frame_ids)

    def frame_path(self, index: int) -> Path:
        """Path of frame ``index`` (position in the video)."""
        return self.frame_dir / f"{self.frame_ids[index]}{self.frame_suffix}"

    def mask_path(self, index: int) -> Path:
        """Path of the ground-truth mask of frame ``index``."""
        return self.mask_dir / f"{self.frame_ids[index]}{self.mask_suffix}"

    def pred_path(self, method: str, index: int) -> Path:
        """Path of method ``method``'s prediction for frame ``index``."""
        return self.pred_dirs[method] / f"{self.frame_ids[index]}{PRED_SUFFIX}"

    def prob_path(self, method: str, index: int) -> Path:
        """Path of method ``method``'s class probabilities for frame ``index``."""
        return self.prob_dirs[method] / f"{self.frame_ids[index]}{PROB_SUFFIX}"


@dataclass
class SplitIndex:
    """The usable videos of a split, in split-file order, and the videos skipped.

    Attributes:
        split: split name (``train``, ``val``, ``test``).
        split_file: the split list that was read.
        videos: usable videos.
        skipped: ``(video, reason)`` for every video left out (only with ``skip_bad_videos``).
    """

    split: str
    split_file: Path
    videos: list[VideoEntry]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        """Frames over all usable videos."""
        return sum(video.num_frames for video in self.videos)

    def frame_counts(self) -> dict[str, int]:
        """Frame count per usable video, in split order."""
        return {video.name: video.num_frames for video in self.videos}


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders digit runs numerically (``f2`` before ``f10``).

    ``re.split`` with a capturing group always alternates str, digits, str, ..., so keys of
    different names compare position by position without mixing int and str.
    """
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_split_file(root: str | Path, split: str) -> tuple[Path, list[str]]:
    """Reads ``<root>/<split>.txt``: one video name per line, blank lines ignored.

    Raises:
        DataError: if the root or split file is missing, the list is empty or names a video twice.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist or is not a directory", root)
    split_file = root / f"{split}.txt"
    if not split_file.is_file():
        raise DataError(f"split file {split_file} is missing (split {split!r})", split_file)
    names = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"split file {split_file} lists no videos", split_file)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            # A duplicate would be streamed twice and double-count its frames in every metric.
            raise DataError(f"split file {split_file} lists video {name!r} more than once", split_file)
        seen.add(name)
    return split_file, names


def _list_stems(folder: Path, suffix: str) -> dict[str, str] | None:
    """Stem → file name of the files in ``folder`` with ``suffix``; None if the folder is missing."""
    try:
        with os.scandir(folder) as entries:
            return {
                entry.name[: -len(suffix)]: entry.name
                for entry in entries
                if entry.name.endswith(suffix) and entry.is_file()
            }
    except (FileNotFoundError, NotADirectoryError):
        return None


def _summarise(paths: list[Path]) -> str:
    listed = ", ".join(str(path) for path in paths[:_MAX_LISTED])
    more = len(paths) - _MAX_LISTED
    return listed + (f" (and {more} more)" if more > 0 else "")


def index_video(
    root: Path,
    video: str,
    layout: DatasetLayout = VSPW_LAYOUT,
    pred_roots: Mapping[str, str | Path] | None = None,
    prob_roots: Mapping[str, str | Path] | None = None,
) -> VideoEntry:
    """Indexes one video from directory listings (nothing is decoded).

    Args:
        root: dataset root.
        video: video name.
        layout: dataset layout.
        pred_roots: prediction root per method; ``<pred_root>/<video>/<frame>.png`` must exist
            for every frame.
        prob_roots: probability folder per method (a subset of ``pred_roots``' methods);
            ``<prob_root>/<video>/<frame>.npz`` must exist for every frame.

    Returns:
        The video's entry.

    Raises:
        DataError: naming the missing folder or file: video folder absent, zero frames, a frame
            without mask, a mask without frame, a missing prediction or probability folder or file.
    """
    frame_dir = layout.frame_dir(root, video)
    mask_dir = layout.mask_dir(root, video)
    frames = _list_stems(frame_dir, layout.frame_suffix)
    if frames is None:
        raise DataError(f"video {video!r}: frame folder {frame_dir} does not exist", frame_dir)
    if not frames:
        raise DataError(f"video {video!r}: frame folder {frame_dir} has no *{layout.frame_suffix} frames", frame_dir)
    masks = _list_stems(mask_dir, layout.mask_suffix)
    if masks is None:
        raise DataError(f"video {video!r}: mask folder {mask_dir} does not exist", mask_dir)
    frame_ids = tuple(sorted(frames, key=natural_key))
    no_mask = [mask_dir / f"{stem}{layout.mask_suffix}" for stem in frame_ids if stem not in masks]
    if no_mask:
        raise DataError(f"video {video!r}: frame without mask, missing {_summarise(no_mask)}", no_mask[0])
    no_frame = [mask_dir / masks[stem] for stem in sorted(masks, key=natural_key) if stem not in frames]
    if no_frame:
        raise DataError(
            f"video {video!r}: mask without frame (no *{layout.frame_suffix} in {frame_dir}): {_summarise(no_frame)}",
            no_frame[0],
        )
    pred_dirs: dict[str, Path] = {}
    for method, pred_root in (pred_roots or {}).items():
        pred_dir = Path(pred_root) / video
        preds = _list_stems(pred_dir, PRED_SUFFIX)
        if preds is None:
            raise DataError(
                f"video {video!r}: prediction folder {pred_dir} of method {method!r} does not exist", pred_dir
            )
        missing = [pred_dir / f"{stem}{PRED_SUFFIX}" for stem in frame_ids if stem not in preds]
        if missing:
            raise DataError(
                f"video {video!r}: prediction of method {method!r} missing: {_summarise(missing)}", missing[0]
            )
        # Extra prediction files (frames the dataset does not list) are not scored, so harmless.
        pred_dirs[method] = pred_dir
    prob_dirs: dict[str, Path] = {}
    for method, prob_root in (prob_roots or {}).items():
        prob_dir = Path(prob_root) / video
        probs = _list_stems(prob_dir, PROB_SUFFIX)
        if probs is None:
            raise DataError(
                f"video {video!r}: probability folder {prob_dir} of method {method!r} does not exist", prob_dir
            )
        missing = [prob_dir / f"{stem}{PROB_SUFFIX}" for stem in frame_ids if stem not in probs]
        if missing:
            raise DataError(
                f"video {video!r}: probabilities of method {method!r} missing: {_summarise(missing)}", missing[0]
            )
        prob_dirs[method] = prob_dir
    return VideoEntry(
        name=video,
        frame_ids=frame_ids,
        frame_dir=frame_dir,
        mask_dir=mask_dir,
        pred_dirs=pred_dirs,
        prob_dirs=prob_dirs,
        frame_suffix=layout.frame_suffix,
        mask_suffix=layout.mask_suffix,
    )


def index_split(
    root: str | Path,
    split: str,
    layout: DatasetLayout = VSPW_LAYOUT,
    pred_roots: Mapping[str, str | Path] | None = None,
    skip_bad_videos: bool = False,
    max_videos: int | None = None,
    prob_roots: Mapping[str, str | Path] | None = None,
) -> SplitIndex:
    """Lists a split's videos with their frames, masks and predictions (no decoding).

    Args:
        root: dataset root holding ``<split>.txt``.
        split: split name.
        layout: dataset layout (:data:`VSPW_LAYOUT` or :data:`VIPSEG_LAYOUT`).
        pred_roots: prediction root per method name.
        skip_bad_videos: leave out videos with index-time problems (with a warning each and a
            record in :attr:`SplitIndex.skipped`) instead of raising.
        max_videos: keep only the first ``max_videos`` usable videos (split-file order).
        prob_roots: probability folder per method name (see :func:`index_video`).

    Returns:
        The split index.

    Raises:
        DataError: on a missing or empty split file, on any bad video unless
            ``skip_bad_videos``, and when no usable video is left.
    """
    root = Path(root)
    split_file, names = read_split_file(root, split)
    videos: list[VideoEntry] = []
    skipped: list[tuple[str, str]] = []
    for name in names:
        if max_videos is not None and len(videos) >= max_videos:
            break
        try:
            videos.append(index_video(root, name, layout, pred_roots, prob_roots))
        except DataError as error:
            if not skip_bad_videos:
                raise
            warnings.warn(f"skipping {layout.name} {split} video: {error}", stacklevel=2)
            skipped.append((name, str(error)))
    if not videos:
        raise DataError(
            f"split file {split_file}: none of its {len(names)} videos is usable "
            f"({len(skipped)} skipped; first: {skipped[0][1] if skipped else 'n/a'})",
            split_file,
        )
    return SplitIndex(split=split, split_file=split_file, videos=videos, skipped=skipped)
