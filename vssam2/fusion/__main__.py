"""``python -m vssam2.fusion``: build the refinement statistics cache of splits (training data of
learned refinement rules).

Example (synthetic data, superpixel masklets, the simulated models)::

    python -m vssam2.fusion --config configs/fusion/superpixel_synthetic.yaml
    torchrun --nproc_per_node 4 -m vssam2.fusion --config configs/fusion/sam2_vspw.yaml

The config names a data module (with ``masklet_cache`` and ``pred_roots``) by ``class_path``
/ ``init_args``, the base ``methods``, the ``splits`` and ``fusion_root``. Statistics land in
``<fusion_root>/<method>-<key>/<split>/<video>.npz``; the folders are printed at the end (give
one to training as ``data.fusion_cache``). Under torchrun every process describes its share of
whole videos. Interrupted runs resume: finished videos are skipped.
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
from vssam2.fusion.compute import ConsistencySampling, FusionRunSummary, compute_fusion_cache  # noqa: E402


def build_parser() -> ArgumentParser:
    """The command's parser (``--config``, ``--print_config``, dotted overrides)."""
    parser = ArgumentParser(
        prog="python -m vssam2.fusion",
        description="Per-masklet statistics and exact action gains of base predictions, for learned refinement.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file (repeatable)")
    parser.add_subclass_arguments(
        VideoSplits,
        "data",
        required=True,
        help="Dataset with masklet_cache and pred_roots (class_path/init_args), e.g. datamodules.VSPWDataModule",
    )
    parser.add_argument("--methods", type=list[str], required=True, help="Base methods (prediction folder names)")
    parser.add_argument("--splits", type=list[str], default=["train", "val"], help="Splits to compute")
    parser.add_argument("--fusion_root", type=str, default="cache/fusion", help="Parent folder of statistics caches")
    parser.add_argument("--top_k", type=int, default=3, help="Candidate classes per masklet")
    parser.add_argument("--use_probs", type=bool, default=False, help="Add probability summaries (data.prob_roots)")
    parser.add_argument(
        "--consistency",
        type=ConsistencySampling,
        default=ConsistencySampling(),
        help="Window signatures of mVC_n: window, stride (windows), pixel_step (exact with both 1)",
    )
    parser.add_argument("--progress", type=bool, default=True, help="Show progress bars (rank 0)")
    return parser


def main(args: Sequence[str] | None = None) -> list[FusionRunSummary]:
    """Parses ``args`` (default ``sys.argv[1:]``), computes this rank's share of each split."""
    quiet_dependency_chatter()
    parser = build_parser()
    config: Namespace = parser.parse_args(list(args) if args is not None else sys.argv[1:])
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    init = instantiate(config)
    rank, world_size = rank_from_env()
    summaries: list[FusionRunSummary] = []
    for split in init.splits:
        for summary in compute_fusion_cache(
            init.data,
            split,
            list(init.methods),
            fusion_root=init.fusion_root,
            top_k=init.top_k,
            use_probs=init.use_probs,
            consistency=init.consistency,
            rank=rank,
            world_size=world_size,
            progress=init.progress,
        ):
            print(summary, flush=True)
            summaries.append(summary)
    for directory in dict.fromkeys(summary.directory for summary in summaries):
        print(f"statistics cache: {directory}  (train with --data.init_args.fusion_cache {directory})")
    return summaries


if __name__ == "__main__":
    main()
