"""``python -m vssam2.features``: pool the masklet vectors of splits into the feature cache.

Example (synthetic data, tiny random SAM2, oracle masklets)::

    python -m vssam2.features --config configs/features/isam2_tiny_synthetic.yaml
    torchrun --nproc_per_node 4 -m vssam2.features --config configs/features/isam2_vspw.yaml

The config names a frozen encoder and a data module (with ``masklet_cache``) by
``class_path`` / ``init_args``, the splits, the pooling and ``feature_root``. Vectors land in
``<feature_root>/<encoder>-<key>/<split>/<video>.npz``; the folder is printed at the end (give
it to training as ``data.feature_cache``). Under torchrun every process computes its share of
whole videos on GPU ``LOCAL_RANK``. Interrupted runs resume: finished videos are skipped.
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
from vssam2.encoders import FrozenEncoder  # noqa: E402
from vssam2.features.compute import FeatureRunSummary, compute_feature_cache  # noqa: E402


def build_parser() -> ArgumentParser:
    """The command's parser (``--config``, ``--print_config``, dotted overrides)."""
    parser = ArgumentParser(
        prog="python -m vssam2.features",
        description="Pool frozen-encoder features over cached masklets into the feature cache.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file (repeatable)")
    parser.add_subclass_arguments(FrozenEncoder, "encoder", required=True, help="Frozen encoder (class_path/init_args)")
    parser.add_subclass_arguments(
        VideoSplits,
        "data",
        required=True,
        help="Dataset with masklet_cache (class_path/init_args): a vssam2.datasets.VideoSplits, "
        "e.g. datamodules.VSPWDataModule",
    )
    parser.add_argument("--splits", type=list[str], default=["train", "val"], help="Splits to compute")
    parser.add_argument("--feature_root", type=str, default="cache/features", help="Parent folder of feature caches")
    parser.add_argument("--pooling", type=str, default="bilinear", help="Feature upsampling: bilinear or nearest")
    parser.add_argument("--per_frame", type=bool, default=False, help="One vector per (frame, masklet)")
    parser.add_argument("--encoder_batch_size", type=int, default=8, help="Frames per encoder call")
    parser.add_argument("--max_videos", type=int | None, default=None, help="Only the first N videos per split")
    parser.add_argument("--progress", type=bool, default=True, help="Show progress bars (rank 0)")
    return parser


def main(args: Sequence[str] | None = None) -> list[FeatureRunSummary]:
    """Parses ``args`` (default ``sys.argv[1:]``), computes this rank's share of each split."""
    quiet_dependency_chatter()
    parser = build_parser()
    config: Namespace = parser.parse_args(list(args) if args is not None else sys.argv[1:])
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    init = instantiate(config)
    rank, world_size = rank_from_env()
    summaries = []
    for split in init.splits:
        summary = compute_feature_cache(
            init.encoder,
            init.data,
            split,
            feature_root=init.feature_root,
            pooling=init.pooling,
            per_frame=init.per_frame,
            encoder_batch_size=init.encoder_batch_size,
            max_videos=init.max_videos,
            rank=rank,
            world_size=world_size,
            progress=init.progress,
        )
        print(summary, flush=True)
        summaries.append(summary)
    if summaries:
        print(f"feature cache: {summaries[0].directory}  (train with --data.feature_cache {summaries[0].directory})")
    return summaries


if __name__ == "__main__":
    main()
