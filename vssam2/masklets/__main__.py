"""``python -m vssam2.masklets``: compute the masklets of a split into the cache.

Example (synthetic data, superpixels)::

    python -m vssam2.masklets --config configs/masklets/superpixel_synthetic.yaml
    python -m vssam2.masklets --config configs/masklets/superpixel_synthetic.yaml --split test --max_videos 2
    torchrun --nproc_per_node 4 -m vssam2.masklets --config configs/masklets/sam2_vspw.yaml

The config names a masklet source and a data module by ``class_path`` / ``init_args``::

    source:
      class_path: vssam2.masklets.superpixel.SuperpixelSource
      init_args: {...}
    data:
      class_path: datamodules.VSPWDataModule
      init_args: {root: ..., clip_len: 16}
    split: val
    cache_root: cache/masklets

The maps land in ``<cache_root>/<source name>-<key>/<video>/<frame>.png`` (the key hashes the
source's configuration, the layout, ``clip_len`` and ``num_classes``); the folder is printed
at the end. Under torchrun (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in the environment)
every process computes its share of whole videos on GPU ``LOCAL_RANK``. Interrupted runs
resume: finished videos are skipped, unfinished ones recomputed.

With a SAM2 source, an optional ``features`` group writes the I-SAM2 feature cache in the
same pass (one encoder pass per frame instead of two; :mod:`vssam2.features.one_pass`)::

    python -m vssam2.masklets --config configs/masklets/sam2_tiny_one_pass_synthetic.yaml
    features:
      level: -1                 # SAM2Encoder's FPN level (-1 = stride 16)
      pooling: bilinear
      per_frame: false
      feature_root: cache/features
      clip_len: 32              # frames per pooled chunk (null: data.clip_len)

The vectors land where ``python -m vssam2.features`` would put them for the equivalent
``SAM2Encoder``: ``<feature_root>/sam2encoder-<key>/<split>/<video>.npz``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace  # noqa: E402

from vssam2.console import quiet_dependency_chatter  # noqa: E402
from vssam2.datasets import VideoSplits  # noqa: E402
from vssam2.datasets.streaming import rank_from_env  # noqa: E402
from vssam2.features.one_pass import OnePassFeatures  # noqa: E402
from vssam2.masklets.base import MaskletSource  # noqa: E402
from vssam2.masklets.compute import CacheRunSummary, compute_cache  # noqa: E402


def build_parser() -> ArgumentParser:
    """The command's parser (``--config``, ``--print_config``, dotted overrides)."""
    parser = ArgumentParser(
        prog="python -m vssam2.masklets",
        description="Compute the masklets of a split into the masklet cache (16-bit PNG per frame).",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file (repeatable)")
    parser.add_subclass_arguments(MaskletSource, "source", required=True, help="Masklet source (class_path/init_args)")
    parser.add_subclass_arguments(
        VideoSplits,
        "data",
        required=True,
        help="Dataset (class_path/init_args): a vssam2.datasets.VideoSplits, e.g. datamodules.VSPWDataModule",
    )
    parser.add_argument("--split", type=str, default="val", help="Split to compute")
    parser.add_argument("--cache_root", type=str, default="cache/masklets", help="Parent folder of cache folders")
    parser.add_argument(
        "--max_videos", type=int | None, default=None, help="Only the first N videos of the split (quick runs)"
    )
    parser.add_argument("--rank", type=int | None, default=None, help="Shard index (default: $RANK or 0)")
    parser.add_argument(
        "--world_size", type=int | None, default=None, help="Number of shards (default: $WORLD_SIZE or 1)"
    )
    parser.add_argument("--progress", type=bool, default=True, help="Show progress bars (rank 0)")
    parser.add_argument(
        "--features",
        type=OnePassFeatures | None,
        default=None,
        help="SAM2 sources only: also write the I-SAM2 feature cache in the same pass (level, pooling, per_frame, "
        "feature_root, clip_len, autocast); null: masklets only",
    )
    return parser


def _select_device() -> None:
    """Under torchrun, makes GPU ``LOCAL_RANK`` the current CUDA device (before the source is built)."""
    import torch

    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and torch.cuda.is_available():
        torch.cuda.set_device(int(local_rank) % torch.cuda.device_count())


def main(args: Sequence[str] | None = None) -> CacheRunSummary:
    """Parses ``args`` (default ``sys.argv[1:]``), computes this rank's share, prints a summary."""
    quiet_dependency_chatter()
    parser = build_parser()
    config: Namespace = parser.parse_args(list(args) if args is not None else sys.argv[1:])
    _select_device()
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    init = instantiate(config)
    env_rank, env_world = rank_from_env()
    rank = env_rank if init.rank is None else init.rank
    world_size = env_world if init.world_size is None else init.world_size
    summary = compute_cache(
        init.source,
        init.data,
        init.split,
        cache_root=init.cache_root,
        max_videos=init.max_videos,
        rank=rank,
        world_size=world_size,
        progress=init.progress,
        features=init.features,
    )
    print(summary, flush=True)
    if summary.feature_directory is not None:
        folder = summary.feature_directory
        print(f"feature cache: {folder}  (train with --data.feature_cache {folder})", flush=True)
    return summary


if __name__ == "__main__":
    main()
