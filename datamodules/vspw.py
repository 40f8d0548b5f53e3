"""LightningDataModule for VSPW: evaluation streaming, training clips, prediction folders."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lightning import LightningDataModule
from torch.utils.data import DataLoader

from vssam2.labels import vspw_classes

from .errors import DataError
from .index import SplitIndex, VideoEntry, index_split
from .layout import VSPW_LAYOUT, DatasetLayout
from .reading import validate_video
from .streaming import VideoClipStream, stream_loader
from .training import TrainClipDataset, collate_clips, default_train_transform

if TYPE_CHECKING:
    from vssam2.masklets.cache import MaskletCache


class VSPWDataModule(LightningDataModule):
    """VSPW videos for evaluation (whole videos streamed in chunks) and training (random clips).

    Layout: ``<root>/data/<video>/origin/<frame>.jpg``, ``<root>/data/<video>/mask/<frame>.png``
    (raw ids, remapped to evaluation ids), split lists ``<root>/<split>.txt``. Predictions:
    ``<pred_root>/<video>/<frame>.png`` of evaluation ids (255 = no prediction).

    Evaluation batches (``val``/``test``/``predict`` dataloaders, one chunk per batch, not
    collated)::

        {"video": str, "frame_ids": list[str], "start": int, "num_frames": int, "last": bool,
         "frames": (T, H, W, 3) uint8 RGB (only with load_frames), "gt": (T, H, W) uint8,
         "preds": {method: (T, H, W) uint8},
         "segments": (T, H, W) int32 (only with masklet_cache)}

    Training batches: ``{"frames": (B, T, H, W, 3) uint8, "gt": (B, T, H, W) uint8,
    "video": list[str], "start": (B,) int64, "frame_ids": list[list[str]]}``.

    Every evaluation split needs ground-truth masks (they are what is scored). Data problems
    raise :class:`DataError` naming the file. Index-time problems (found at
    setup from directory listings: missing video folder, zero frames, frame without mask,
    mask without frame, missing prediction) skip the video when ``skip_bad_videos`` is set,
    with a warning and a ``(video, reason)`` entry in :attr:`skipped`; a split with no usable
    video is still an error. Load-time problems (undecodable file, size mismatch, label ids
    out of range) **always raise**, even with ``skip_bad_videos``: by the time one is found,
    earlier chunks of the video may already be in the metrics, and dropping the rest would
    count a partial video as whole. To have load-time problems skipped too, set
    ``prevalidate=True``: setup then reads every file once with the same checks (in the main
    process, on every rank, so all ranks agree on the video list) and treats a failure like
    an index-time problem.

    Args:
        root: dataset root.
        pred_root: one prediction folder; its method name is the folder's basename.
        pred_roots: method name → prediction folder, for several models in one run. Merged
            after ``pred_root``; the order is kept in :attr:`pred_names`.
        test_split: split streamed by the test and predict dataloaders.
        val_split: split streamed by the validation dataloader.
        train_split: split sampled by the training dataloader.
        clip_len: frames per evaluation chunk (the last chunk of a video may be shorter).
        load_frames: decode RGB frames in evaluation batches; False when only scoring saved
            predictions (JPEG decoding dominates the cost otherwise).
        num_workers: DataLoader workers; videos are split whole among them.
        skip_bad_videos: skip videos with problems instead of raising (see above).
        max_videos: use only the first ``max_videos`` usable videos of each split (quick runs).
        train_clip_len: frames per training clip.
        train_crop: training crop size (height, width) of the default transform.
        batch_size: training clips per batch.
        train_clips_per_epoch: training clips per epoch (default: number of training videos).
        num_classes: number of evaluation classes.
        train_transform: clip transform called as ``transform(images=(T, H, W, 3) uint8,
            masks=(T, H, W) uint8)`` returning ``{"images", "masks"}`` (an albumentations 2.x
            ``Compose`` works: it samples once per call, so the whole clip gets the same
            geometry). None = :func:`default_train_transform` of ``train_crop``. Masks hold
            evaluation ids: pad them with 255.
        prevalidate: read every file of each split at setup to find load-time problems before
            the run (costs one full read of the data).
        masklet_cache: a masklet cache folder ``<cache_root>/<source>-<key>`` written by
            ``python -m vssam2.masklets``; evaluation batches then carry its segment maps as
            ``"segments"``. The folder's ``config.json`` must hash to the key its name ends
            with and name this module's layout; every video streamed must be complete in it
            (checked when the stream is built) and every map must have the frame's size, else
            :class:`DataError` naming the folder or file. Training clips then carry their
            segment maps too (for online masklet classifiers).
        feature_cache: a masklet feature cache folder ``<feature_root>/<encoder>-<key>``
            written by ``python -m vssam2.features``. Training then serves shuffled batches of
            cached masklet vectors (``{"vectors", "target", "area"}``) and validation one item
            per video of ``val_split`` (vectors + GT histograms); testing still streams clips.
            Every video of both splits must be in the cache (else :class:`DataError`).
        feature_batch_size: masklet vectors per training batch from the feature cache.
    """

    layout: ClassVar[DatasetLayout] = VSPW_LAYOUT

    def __init__(
        self,
        root: str,
        pred_root: str | None = None,
        pred_roots: dict[str, str] | None = None,
        test_split: str = "val",
        val_split: str = "val",
        train_split: str = "train",
        clip_len: int = 16,
        load_frames: bool = True,
        num_workers: int = 0,
        skip_bad_videos: bool = False,
        max_videos: int | None = None,
        train_clip_len: int = 4,
        train_crop: tuple[int, int] = (256, 256),
        batch_size: int = 2,
        train_clips_per_epoch: int | None = None,
        num_classes: int = 124,
        train_transform: Callable[..., dict[str, Any]] | None = None,
        prevalidate: bool = False,
        masklet_cache: str | None = None,
        feature_cache: str | None = None,
        feature_batch_size: int = 256,
    ) -> None:
        super().__init__()
        for name, value, minimum in [
            ("clip_len", clip_len, 1),
            ("train_clip_len", train_clip_len, 1),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("num_classes", num_classes, 1),
            ("feature_batch_size", feature_batch_size, 1),
        ]:
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
        if max_videos is not None and max_videos < 1:
            raise ValueError(f"max_videos must be >= 1 or None, got {max_videos}")
        if num_classes > 255:
            # 255 is the ignore id and everything travels as uint8.
            raise ValueError(f"num_classes must be <= 255 (ids are uint8, 255 = ignore), got {num_classes}")
        self.save_hyperparameters(ignore=["train_transform"])
        self.root = Path(root)
        self.pred_roots: dict[str, Path] = {}
        if pred_root is not None:
            self.pred_roots[Path(pred_root).name] = Path(pred_root)
        for method, folder in (pred_roots or {}).items():
            if method in self.pred_roots and self.pred_roots[method] != Path(folder):
                raise ValueError(
                    f"prediction method {method!r} is given twice: {self.pred_roots[method]} and {folder}"
                )
            self.pred_roots[method] = Path(folder)
        self.pred_names: list[str] = list(self.pred_roots)
        self.test_split = test_split
        self.val_split = val_split
        self.train_split = train_split
        self.clip_len = clip_len
        self.load_frames = load_frames
        self.num_workers = num_workers
        self.skip_bad_videos = skip_bad_videos
        self.max_videos = max_videos
        self.train_clip_len = train_clip_len
        self.train_crop = (int(train_crop[0]), int(train_crop[1]))
        self.batch_size = batch_size
        self.train_clips_per_epoch = train_clips_per_epoch
        self.num_classes = num_classes
        self.train_transform = (
            train_transform if train_transform is not None else default_train_transform(self.train_crop)
        )
        self.prevalidate = prevalidate
        self.masklet_cache = self._open_masklet_cache(masklet_cache) if masklet_cache is not None else None
        self.feature_cache = None
        if feature_cache is not None:
            from vssam2.features import open_feature_cache  # vssam2.features imports datamodules

            self.feature_cache = open_feature_cache(feature_cache)
        self.feature_batch_size = feature_batch_size
        names = list(vspw_classes().names)
        self.class_names: list[str] = (names + [f"class_{i}" for i in range(len(names), num_classes)])[:num_classes]
        # (split, with predictions) → index; the train split is indexed without predictions.
        self._indexes: dict[tuple[str, bool], SplitIndex] = {}

    def _open_masklet_cache(self, directory: str) -> MaskletCache:
        # Imported here: vssam2.masklets.cache imports this package (DataError).
        from vssam2.masklets.cache import open_cache

        cache = open_cache(directory)
        layout = cache.config.get("data", {}).get("layout")
        if layout != self.layout.name:
            raise DataError(
                f"masklet cache {cache.directory} was computed on {layout} data, not {self.layout.name}", cache.directory
            )
        return cache

    # ----------------------------------------------------------------------------- indexing

    def index(self, split: str, with_preds: bool = True) -> SplitIndex:
        """Indexes a split once (cached): videos, frame counts and skipped videos.

        Args:
            split: split name.
            with_preds: require this module's predictions for every frame (evaluation splits).

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
            )
            if self.prevalidate:
                self._prevalidate(split_index, load_frames=self.load_frames or not with_preds)
            self._indexes[key] = split_index
        return self._indexes[key]

    def _prevalidate(self, split_index: SplitIndex, load_frames: bool) -> None:
        def check(video: VideoEntry) -> DataError | None:
            try:
                validate_video(video, self.layout, self.num_classes, load_frames)
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

    def setup(self, stage: str | None = None) -> None:
        """Indexes the splits a stage needs (directory listings only, nothing decoded)."""
        if stage in ("fit", None):
            self.index(self.train_split, with_preds=False)
        if stage in ("fit", "validate", None):
            self.index(self.val_split)
        if stage in ("test", "predict", None):
            self.index(self.test_split)

    # --------------------------------------------------------------------------- datasets

    def _rank_and_world(self) -> tuple[int, int]:
        # Read from the trainer, not torch.distributed: this also runs before the process
        # group exists, and never inside workers.
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def eval_dataset(self, split: str, rank: int | None = None, world_size: int | None = None) -> VideoClipStream:
        """The stream of one rank's share of ``split``.

        Args:
            split: split name.
            rank: rank; default from the trainer (0 without one).
            world_size: number of ranks; default from the trainer (1 without one).

        Returns:
            The rank's stream.
        """
        default_rank, default_world = self._rank_and_world()
        stream = VideoClipStream(
            self.index(split).videos,
            layout=self.layout,
            clip_len=self.clip_len,
            load_frames=self.load_frames,
            num_classes=self.num_classes,
            rank=default_rank if rank is None else rank,
            world_size=default_world if world_size is None else world_size,
            masklet_cache=self.masklet_cache,
        )
        if self.masklet_cache is not None:
            # Fail before any chunk is scored, not in the middle of the run.
            self.masklet_cache.check_videos([video.name for video in stream.videos])
        return stream

    def eval_dataloader(self, split: str, rank: int | None = None, world_size: int | None = None) -> DataLoader:
        """DataLoader over :meth:`eval_dataset` (``batch_size=None``: one chunk per batch)."""
        return stream_loader(self.eval_dataset(split, rank, world_size), self.num_workers)

    def train_dataset(self) -> TrainClipDataset:
        """Random clips of the training split."""
        return TrainClipDataset(
            self.index(self.train_split, with_preds=False).videos,
            layout=self.layout,
            clip_len=self.train_clip_len,
            clips_per_epoch=self.train_clips_per_epoch,
            transform=self.train_transform,
            num_classes=self.num_classes,
            masklet_cache=self.masklet_cache,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of random clips, or of cached masklet vectors with ``feature_cache``.

        Lightning adds a DistributedSampler under DDP.
        """
        if self.feature_cache is not None:
            from vssam2.features import CachedMaskletVectors, first_item

            videos = [video.name for video in self.index(self.train_split, with_preds=False).videos]
            return DataLoader(
                CachedMaskletVectors(self.feature_cache, self.train_split, videos),
                batch_size=self.feature_batch_size,
                shuffle=True,
                collate_fn=first_item,
            )
        return DataLoader(
            self.train_dataset(),
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            collate_fn=collate_clips,
            persistent_workers=False,
            drop_last=False,
        )

    def val_dataloader(self) -> DataLoader:
        """Streams ``val_split`` (with ``feature_cache``: one cached item per video of this rank)."""
        if self.feature_cache is not None:
            from vssam2.features import CachedVideoMasklets

            rank, world_size = self._rank_and_world()
            videos = [(video.name, video.num_frames) for video in self.index(self.val_split, with_preds=False).videos]
            dataset = CachedVideoMasklets(self.feature_cache, self.val_split, videos, rank, world_size)
            return DataLoader(dataset, batch_size=None)
        return self.eval_dataloader(self.val_split)

    def test_dataloader(self) -> DataLoader:
        """Streams ``test_split``."""
        return self.eval_dataloader(self.test_split)

    def predict_dataloader(self) -> DataLoader:
        """Streams ``test_split`` (same batches as testing)."""
        return self.eval_dataloader(self.test_split)
