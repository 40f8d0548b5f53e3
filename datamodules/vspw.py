"""LightningDataModule for VSPW: evaluation streaming, training clips, prediction folders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning import LightningDataModule
from torch.utils.data import DataLoader

from vssam2.datasets import VideoSplits
from vssam2.datasets.streaming import stream_loader

from .training import TrainClipDataset, collate_clips, default_train_transform


class VSPWDataModule(VideoSplits, LightningDataModule):
    """VSPW videos for evaluation (whole videos streamed in chunks) and training (random clips).

    Layout: ``<root>/data/<video>/origin/<frame>.jpg``, ``<root>/data/<video>/mask/<frame>.png``
    (raw ids, remapped to evaluation ids), split lists ``<root>/<split>.txt``. Predictions:
    ``<pred_root>/<video>/<frame>.png`` of evaluation ids (255 = no prediction). Class
    probabilities of a prediction method (optional): ``<prob_root>/<video>/<frame>.npz`` with
    top-k ``classes`` and ``probs`` (``docs/probabilities.md``).

    Evaluation (``val``/``test``/``predict`` dataloaders, one chunk per batch, not collated):
    the chunks of :class:`vssam2.datasets.VideoSplits`, which also documents indexing, bad
    data, the masklet cache and the probability folders (``"probs"``: one
    :class:`vssam2.probabilities.TopKProbs` per method of ``prob_roots``). Training batches:
    ``{"frames": (B, T, H, W, 3) uint8, "gt": (B, T, H, W) uint8, "video": list[str], "start":
    (B,) int64, "frame_ids": list[list[str]]}`` (plus ``"segments"`` with a masklet cache).

    Args:
        root, pred_root, pred_roots, test_split, val_split, clip_len, load_frames, num_workers,
            skip_bad_videos, max_videos, num_classes, prevalidate, masklet_cache: as for
            :class:`vssam2.datasets.VideoSplits`.
        prob_roots: method name → probability folder of that prediction method, as for
            :class:`vssam2.datasets.VideoSplits` (evaluation chunks then carry ``"probs"``).
        train_split: split sampled by the training dataloader.
        train_clip_len: frames per training clip.
        train_crop: training crop size (height, width) of the default transform.
        batch_size: training clips per batch.
        train_clips_per_epoch: training clips per epoch (default: number of training videos).
        train_transform: clip transform called as ``transform(images=(T, H, W, 3) uint8,
            masks=(T, H, W) uint8)`` returning ``{"images", "masks"}`` (an albumentations 2.x
            ``Compose`` works: it samples once per call, so the whole clip gets the same
            geometry). None = :func:`default_train_transform` of ``train_crop``. Masks hold
            evaluation ids: pad them with 255.
        feature_cache: a masklet feature cache folder ``<feature_root>/<encoder>-<key>``
            written by ``python -m vssam2.features``. Training then serves shuffled batches of
            cached masklet vectors (``{"vectors", "target", "area"}``) and validation one item
            per video of ``val_split`` (vectors + GT histograms); testing still streams clips.
            Every video of both splits must be in the cache (else :class:`vssam2.errors.DataError`).
        feature_batch_size: rows per training batch from the feature cache or the refinement
            statistics cache.
        fusion_cache: a refinement statistics cache folder ``<fusion_root>/<method>-<key>``
            written by ``python -m vssam2.fusion`` (docs/refinement.md), to train a learned
            refinement rule: training then serves shuffled batches of masklet rows with the
            gain of every action (``{"features", "candidates", "gains", "weighted_gains",
            "area"}``) and validation one item per video of ``val_split`` (rows + joint
            histograms, for exact mIoU); testing still streams clips (give ``masklet_cache``
            and ``pred_roots`` for it). Every video of both splits must be in the cache.
        fusion_calibration: share of the training videos held out of the rule's fit (every
            n-th video of ``train_split``, n = round(1 / share)) to calibrate when the learned
            rule overrides its fallback; 0 = no calibration.
    """

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
        prob_roots: dict[str, str] | None = None,
        fusion_cache: str | None = None,
        fusion_calibration: float = 0.25,
    ) -> None:
        LightningDataModule.__init__(self)
        VideoSplits.__init__(
            self,
            root,
            pred_root=pred_root,
            pred_roots=pred_roots,
            test_split=test_split,
            val_split=val_split,
            clip_len=clip_len,
            load_frames=load_frames,
            num_workers=num_workers,
            skip_bad_videos=skip_bad_videos,
            max_videos=max_videos,
            num_classes=num_classes,
            prevalidate=prevalidate,
            masklet_cache=masklet_cache,
            prob_roots=prob_roots,
        )
        for name, value in [
            ("train_clip_len", train_clip_len),
            ("batch_size", batch_size),
            ("feature_batch_size", feature_batch_size),
        ]:
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.save_hyperparameters(ignore=["train_transform"])
        self.train_split = train_split
        self.train_clip_len = train_clip_len
        self.train_crop = (int(train_crop[0]), int(train_crop[1]))
        self.batch_size = batch_size
        self.train_clips_per_epoch = train_clips_per_epoch
        self.train_transform = (
            train_transform if train_transform is not None else default_train_transform(self.train_crop)
        )
        self.feature_cache = None
        if feature_cache is not None:
            from vssam2.features import open_feature_cache

            self.feature_cache = open_feature_cache(feature_cache)
        self.feature_batch_size = feature_batch_size
        if feature_cache is not None and fusion_cache is not None:
            raise ValueError("give feature_cache (a masklet classifier) or fusion_cache (a refinement rule), not both")
        self.fusion_cache = None
        if fusion_cache is not None:
            from vssam2.fusion.cache import open_fusion_cache

            self.fusion_cache = open_fusion_cache(fusion_cache)
        if not 0.0 <= fusion_calibration < 1.0:
            raise ValueError(f"fusion_calibration must be in [0, 1), got {fusion_calibration}")
        self.fusion_calibration = float(fusion_calibration)

    def setup(self, stage: str | None = None) -> None:
        """Indexes the splits a stage needs (directory listings only, nothing decoded)."""
        if stage in ("fit", None):
            self.index(self.train_split, with_preds=False)
        if stage in ("fit", "validate", None):
            self.index(self.val_split)
        if stage in ("test", "predict", None):
            self.index(self.test_split)

    # --------------------------------------------------------------------------- datasets

    def rank_and_world(self) -> tuple[int, int]:
        """(rank, world size) from the trainer: this also runs before the process group
        exists, and never inside workers. (0, 1) without a trainer."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

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
        """Shuffled batches of random clips, or of cached rows with ``feature_cache`` / ``fusion_cache``.

        Lightning adds a DistributedSampler under DDP.
        """
        if self.fusion_cache is not None:
            from vssam2.features import first_item
            from vssam2.fusion.dataset import FusionRows

            held_out = set(self.fusion_calibration_videos)
            videos = [v.name for v in self.index(self.train_split, with_preds=False).videos if v.name not in held_out]
            return DataLoader(
                FusionRows(self.fusion_cache, self.train_split, videos),
                batch_size=self.feature_batch_size,
                shuffle=True,
                collate_fn=first_item,
            )
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

    @property
    def fusion_calibration_videos(self) -> list[str]:
        """Training videos held out of a learned rule's fit for its calibration (see ``fusion_calibration``)."""
        if self.fusion_cache is None or self.fusion_calibration <= 0:
            return []
        videos = [video.name for video in self.index(self.train_split, with_preds=False).videos]
        step = max(2, round(1 / self.fusion_calibration))
        return videos[::step] if len(videos) > 1 else []

    def val_dataloader(self) -> DataLoader:
        """Streams ``val_split`` (with ``feature_cache`` / ``fusion_cache``: one cached item per video of this rank)."""
        if self.fusion_cache is not None:
            from vssam2.fusion.dataset import FusionVideos

            rank, world_size = self.rank_and_world()
            videos = [(video.name, video.num_frames) for video in self.index(self.val_split, with_preds=False).videos]
            return DataLoader(
                FusionVideos(self.fusion_cache, self.val_split, videos, rank, world_size), batch_size=None
            )
        if self.feature_cache is not None:
            from vssam2.features import CachedVideoMasklets

            rank, world_size = self.rank_and_world()
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
