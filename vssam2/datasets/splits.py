"""A VSS dataset on disk as the library sees it: splits, prediction folders, masklets, streams.

:class:`VideoSplits` holds everything evaluation and the compute drivers (masklet cache,
feature cache, ablations) need from a dataset, without Lightning: the layout, the split
indexes, the prediction folders that are scored (with the class probabilities of those that
have them), an optional masklet cache, and the chunk stream of one rank's share of a split.
:class:`datamodules.VSPWDataModule` adds training clips and the Lightning dataloaders on top
of it.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vssam2.datasets.index import SplitIndex, VideoEntry, index_split
from vssam2.datasets.layout import VSPW_LAYOUT, DatasetLayout
from vssam2.datasets.reading import image_size, validate_video
from vssam2.datasets.streaming import VideoClipStream, chunk_bounds
from vssam2.errors import DataError
from vssam2.labels import vspw_classes
from vssam2.probabilities import read_prob_frames, read_prob_k

if TYPE_CHECKING:
    from vssam2.masklets.cache import MaskletCache


class VideoSplits:
    """The splits of one dataset root, with the prediction folders and masklets to stream.

    Evaluation streams (one chunk per item, not collated)::

        {"video": str, "frame_ids": list[str], "start": int, "num_frames": int, "last": bool,
         "frames": (T, H, W, 3) uint8 RGB (only with load_frames), "gt": (T, H, W) uint8,
         "preds": {method: (T, H, W) uint8},
         "segments": (T, H, W) int32 (only with masklet_cache),
         "probs": {method: TopKProbs} (only with prob_roots: the methods that have a folder)}

    ``"probs"`` holds a :class:`vssam2.probabilities.TopKProbs` per method of ``prob_roots``:
    (T, k, H, W) uint8 classes and float16 probabilities of the chunk's frames
    (``docs/probabilities.md``).

    Every evaluation split needs ground-truth masks (they are what is scored). Data problems
    raise :class:`~vssam2.errors.DataError` naming the file. Index-time problems (found from
    directory listings: missing video folder, zero frames, frame without mask, mask without
    frame, missing prediction or probability file) skip the video when ``skip_bad_videos`` is
    set, with a warning and a ``(video, reason)`` entry in :attr:`skipped`; a split with no
    usable video is still an error. Load-time problems (undecodable file, size mismatch, label
    ids out of range, a bad probability file) **always raise**, even with ``skip_bad_videos``:
    by the time one is found, earlier chunks of the video may already be in the metrics, and
    dropping the rest would count a partial video as whole. To have load-time problems skipped
    too, set ``prevalidate=True``: indexing then reads every file once with the same checks (on
    every rank, so all ranks agree on the video list) and treats a failure like an index-time
    problem.

    Args:
        root: dataset root.
        pred_root: one prediction folder; its method name is the folder's basename.
        pred_roots: method name → prediction folder, for several models in one run. Merged
            after ``pred_root``; the order is kept in :attr:`pred_names`.
        test_split: split streamed by the test and predict dataloaders.
        val_split: split streamed by the validation dataloader.
        clip_len: frames per evaluation chunk (the last chunk of a video may be shorter).
        load_frames: decode RGB frames in evaluation chunks; False when only scoring saved
            predictions (JPEG decoding dominates the cost otherwise).
        num_workers: DataLoader workers (videos are split whole among them); also the
            threads of ``prevalidate``.
        skip_bad_videos: skip videos with problems instead of raising (see above).
        max_videos: use only the first ``max_videos`` usable videos of each split (quick runs).
        num_classes: number of evaluation classes.
        prevalidate: read every file of each split when indexing it, to find load-time
            problems before the run (costs one full read of the data).
        masklet_cache: a masklet cache folder ``<cache_root>/<source>-<key>`` written by
            ``python -m vssam2.masklets``; evaluation chunks then carry its segment maps as
            ``"segments"``. The folder's ``config.json`` must hash to the key its name ends
            with and name this dataset's layout; every video streamed must be complete in it
            (checked when the stream is built) and every map must have the frame's size, else
            :class:`~vssam2.errors.DataError` naming the folder or file.
        prob_roots: method name → probability folder ``<prob_root>/<video>/<frame>.npz``
            (:mod:`vssam2.probabilities`) of a method that is also a prediction method;
            evaluation chunks then carry ``"probs"``. Indexed like the prediction folders (a
            missing video folder or frame file is an index-time problem). The folder's k is
            that of the first frame of the first usable video, read when the split is
            indexed; every file must have it. Files are checked for dtypes, shapes and value
            ranges when read (a load-time problem); the top-1 class need not equal the
            prediction PNG.
    """

    layout: ClassVar[DatasetLayout] = VSPW_LAYOUT

    def __init__(
        self,
        root: str,
        pred_root: str | None = None,
        pred_roots: dict[str, str] | None = None,
        test_split: str = "val",
        val_split: str = "val",
        clip_len: int = 16,
        load_frames: bool = True,
        num_workers: int = 0,
        skip_bad_videos: bool = False,
        max_videos: int | None = None,
        num_classes: int = 124,
        prevalidate: bool = False,
        masklet_cache: str | None = None,
        prob_roots: dict[str, str] | None = None,
    ) -> None:
        for name, value, minimum in [
            ("clip_len", clip_len, 1),
            ("num_workers", num_workers, 0),
            ("num_classes", num_classes, 1),
        ]:
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
        if max_videos is not None and max_videos < 1:
            raise ValueError(f"max_videos must be >= 1 or None, got {max_videos}")
        if num_classes > 255:
            # 255 is the ignore id and everything travels as uint8.
            raise ValueError(f"num_classes must be <= 255 (ids are uint8, 255 = ignore), got {num_classes}")
        # What a copy with other options is rebuilt from (the data module saves all of its own).
        self._init_args = {
            "root": root,
            "pred_root": pred_root,
            "pred_roots": pred_roots,
            "test_split": test_split,
            "val_split": val_split,
            "clip_len": clip_len,
            "load_frames": load_frames,
            "num_workers": num_workers,
            "skip_bad_videos": skip_bad_videos,
            "max_videos": max_videos,
            "num_classes": num_classes,
            "prevalidate": prevalidate,
            "masklet_cache": masklet_cache,
            "prob_roots": prob_roots,
        }
        self.root = Path(root)
        self.pred_roots: dict[str, Path] = {}
        if pred_root is not None:
            self.pred_roots[Path(pred_root).name] = Path(pred_root)
        for method, folder in (pred_roots or {}).items():
            if method in self.pred_roots and self.pred_roots[method] != Path(folder):
                raise ValueError(f"prediction method {method!r} is given twice: {self.pred_roots[method]} and {folder}")
            self.pred_roots[method] = Path(folder)
        self.pred_names: list[str] = list(self.pred_roots)
        unknown = [method for method in (prob_roots or {}) if method not in self.pred_roots]
        if unknown:
            raise ValueError(
                f"prob_roots names methods without a prediction folder: {unknown} "
                f"(prediction methods: {self.pred_names}); probabilities accompany a prediction folder"
            )
        # In prediction-method order, so chunks list methods the same way in "preds" and "probs".
        self.prob_roots: dict[str, Path] = {
            method: Path(prob_roots[method]) for method in self.pred_names if method in (prob_roots or {})
        }
        # Each probability folder's k, fixed by the first split indexed with predictions.
        self.prob_k: dict[str, int] = {}
        self.test_split = test_split
        self.val_split = val_split
        self.clip_len = clip_len
        self.load_frames = load_frames
        self.num_workers = num_workers
        self.skip_bad_videos = skip_bad_videos
        self.max_videos = max_videos
        self.num_classes = num_classes
        self.prevalidate = prevalidate
        self.masklet_cache = self._open_masklet_cache(masklet_cache) if masklet_cache is not None else None
        names = list(vspw_classes().names)
        self.class_names: list[str] = (names + [f"class_{i}" for i in range(len(names), num_classes)])[:num_classes]
        # (split, with predictions) → index; a split indexed for its frames only needs no predictions.
        self._indexes: dict[tuple[str, bool], SplitIndex] = {}

    def _open_masklet_cache(self, directory: str) -> MaskletCache:
        # Imported here: the masklet cache module imports the dataset readers.
        from vssam2.masklets.cache import open_cache

        cache = open_cache(directory)
        layout = cache.config.get("data", {}).get("layout")
        if layout != self.layout.name:
            raise DataError(
                f"masklet cache {cache.directory} was computed on {layout} data, not {self.layout.name}",
                cache.directory,
            )
        return cache

    def with_options(self, **overrides: Any) -> VideoSplits:
        """A new dataset of the same class, with the same init args but ``overrides``.

        Args:
            overrides: init args to change, e.g. ``clip_len=8, masklet_cache=DIR``.
        """
        saved = getattr(self, "hparams", None)
        args = dict(saved) if saved else dict(self._init_args)
        args.update(overrides)
        return type(self)(**args)

    # ----------------------------------------------------------------------------- indexing

    def index(self, split: str, with_preds: bool = True) -> SplitIndex:
        """Indexes a split once (cached): videos, frame counts and skipped videos.

        Args:
            split: split name.
            with_preds: require the predictions of every method for every frame (evaluation
                splits); False for splits used for their frames only (training, masklets).

        Returns:
            The split index; ``index(split).frame_counts()`` gives frames per video.
        """
        key = (split, with_preds)
        if key not in self._indexes:
            split_index = index_split(
                self.root,
                split,
                self.layout,
                pred_roots=self.pred_roots if with_preds else None,
                skip_bad_videos=self.skip_bad_videos,
                max_videos=self.max_videos,
                prob_roots=self.prob_roots if with_preds else None,
            )
            if with_preds:
                self._fix_prob_k(split_index)
            if self.prevalidate:
                self._prevalidate(split_index, load_frames=self.load_frames or not with_preds)
            self._indexes[key] = split_index
        return self._indexes[key]

    def _fix_prob_k(self, split_index: SplitIndex) -> None:
        """Reads each probability folder's k from the header of its first file, once."""
        for method in self.prob_roots:
            if method in self.prob_k:
                continue
            for video in split_index.videos:
                try:
                    self.prob_k[method] = read_prob_k(video.prob_path(method, 0))
                    break
                except DataError:
                    # Validation will skip that video; the next one gives the folder's k.
                    if not (self.prevalidate and self.skip_bad_videos):
                        raise

    def _validate_probs(self, video: VideoEntry) -> None:
        """Reads every probability file of a video with the stream's checks."""
        if not video.prob_dirs:
            return
        size = image_size(video.mask_path(0))
        for method in video.prob_dirs:
            for start, stop in chunk_bounds(video.num_frames, 16):
                paths = [video.prob_path(method, index) for index in range(start, stop)]
                read_prob_frames(paths, self.num_classes, size, self.prob_k.get(method))

    def _prevalidate(self, split_index: SplitIndex, load_frames: bool) -> None:
        def check(video: VideoEntry) -> DataError | None:
            try:
                validate_video(video, self.layout, self.num_classes, load_frames)
                self._validate_probs(video)
            except DataError as error:
                return error
            return None

        # PIL decodes with the GIL released, so threads give real parallelism here.
        with ThreadPoolExecutor(max_workers=max(1, self.num_workers)) as pool:
            errors = list(pool.map(check, split_index.videos))
        bad = [(video, error) for video, error in zip(split_index.videos, errors) if error is not None]
        if not bad:
            return
        if not self.skip_bad_videos:
            more = f" (and {len(bad) - 1} more bad videos)" if len(bad) > 1 else ""
            raise DataError(f"{bad[0][1]}{more}", bad[0][1].path) from bad[0][1]
        for video, error in bad:
            warnings.warn(f"skipping {self.layout.name} {split_index.split} video: {error}", stacklevel=3)
            split_index.skipped.append((video.name, str(error)))
        bad_names = {video.name for video, _ in bad}
        split_index.videos = [video for video in split_index.videos if video.name not in bad_names]
        if not split_index.videos:
            raise DataError(
                f"split file {split_index.split_file}: no usable video left after validation "
                f"({len(split_index.skipped)} skipped; first: {split_index.skipped[0][1]})",
                split_index.split_file,
            )

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(video, reason)`` of every video skipped so far, over all indexed splits."""
        seen: set[tuple[str, str]] = set()
        out: list[tuple[str, str]] = []
        for split_index in self._indexes.values():
            for entry in split_index.skipped:
                if entry not in seen:
                    seen.add(entry)
                    out.append(entry)
        return out

    # ------------------------------------------------------------------------------ streams

    def rank_and_world(self) -> tuple[int, int]:
        """Default (rank, world size) of :meth:`eval_dataset`: one process here; the Lightning
        data module reads its trainer's."""
        return 0, 1

    def eval_dataset(self, split: str, rank: int | None = None, world_size: int | None = None) -> VideoClipStream:
        """The chunk stream of one rank's share of ``split`` (whole videos, balanced by frames).

        Args:
            split: split name.
            rank: rank; default :meth:`rank_and_world`.
            world_size: number of ranks; default :meth:`rank_and_world`.

        Returns:
            The rank's stream.
        """
        default_rank, default_world = self.rank_and_world()
        stream = VideoClipStream(
            self.index(split).videos,
            layout=self.layout,
            clip_len=self.clip_len,
            load_frames=self.load_frames,
            num_classes=self.num_classes,
            rank=default_rank if rank is None else rank,
            world_size=default_world if world_size is None else world_size,
            masklet_cache=self.masklet_cache,
            prob_k=self.prob_k,
        )
        if self.masklet_cache is not None:
            # Fail before any chunk is scored, not in the middle of the run.
            self.masklet_cache.check_videos([video.name for video in stream.videos])
        return stream
