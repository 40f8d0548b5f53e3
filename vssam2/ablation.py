"""Ablations (Tables 4–7): sweep one masklet parameter, refine, score, write the table.

One command per ablation::

    python -m vssam2.ablation --config configs/ablation/window_synthetic.yaml
    python -m vssam2.ablation --config configs/ablation/window_synthetic.yaml --values [1,4,8]
    python -m vssam2.ablation --config configs/ablation/sources_synthetic.yaml

For every value of ``parameter`` the source is deep-copied and the value set along the dotted
attribute path (``window``, ``proposal.points_per_side``, ``proposal.pred_iou_thresh``,
``proposal.stability_score_thresh``, ...); the masklets of the split are computed into the
masklet cache with :func:`vssam2.masklets.cache.compute_cache` (videos already complete under
that exact configuration are skipped, so re-running an ablation, or adding a value, only
computes what is missing); the split is then streamed with those masklets, and every
prediction source of the data module is refined by majority vote and scored on the one
refine-and-score path (:class:`vssam2.scoring.ChunkScorer`). The base predictions are scored
once.

``parameter: source`` compares masklet sources (SAM2 vs superpixels vs oracle): ``values`` is
then a list of source configs (``{class_path, init_args}``, optionally with a ``label``) or
:class:`MaskletSource` objects, and ``source`` is not needed.

Chunking: votes are counted per chunk (``clip_len`` frames). With ``tie_clip_len`` (default)
a source with a ``window`` attribute (SAM2) is fed and voted with ``clip_len = window``, so
in the window ablation every vote covers exactly one masklet window (as in the study, Eq. 2);
other sources use the data module's ``clip_len``. The metrics do not depend on chunking.

Outputs in ``out_dir``: ``ablation.md`` (Markdown table: a row per base model, then a row per
(value, model), metrics in %), ``ablation.json`` (fractions, NaN → null, plus the cache
folders and what was computed / skipped) and ``ablation.png`` (mIoU, mBIoU, mVC8 vs value).

Single process (rank 0 of 1): compute large caches beforehand with
``torchrun -m vssam2.masklets`` on the same configuration; the ablation then only reads them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from vssam2.console import quiet_dependency_chatter  # noqa: E402
from vssam2.masklets.base import MaskletSource  # noqa: E402
from vssam2.masklets.cache import cache_key  # noqa: E402
from vssam2.masklets.compute import compute_cache  # noqa: E402
from vssam2.metrics import METRIC_NAMES, MetricConfig  # noqa: E402
from vssam2.scoring import ChunkScorer, Refinement, score_stream  # noqa: E402

#: ``parameter`` value of the masklet-source comparison.
SOURCE_PARAMETER = "source"
#: Metrics drawn in the plot.
PLOT_METRICS: tuple[str, ...] = ("mIoU", "mBIoU", "mVC8")
BASE_LABEL = "base"


# ------------------------------------------------------------------------------ parameters


def _coerce(value: Any, current: Any, path: str) -> Any:
    """``value`` converted to the type of the attribute's current value (bool / int / float)."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise TypeError(f"parameter {path!r} is a bool, got {value!r}")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise TypeError(f"parameter {path!r} is an int, got {value!r}")
        return int(value)
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"parameter {path!r} is a float, got {value!r}")
        return float(value)
    return value


def _resolve(source: Any, path: str) -> tuple[Any, str]:
    """The object holding the last attribute of the dotted ``path`` and that attribute's name.

    Raises:
        AttributeError: naming the missing part and the attributes that exist there.
    """
    if not path or any(not part or part.startswith("_") for part in path.split(".")):
        raise AttributeError(f"ablation parameter {path!r} is not a dotted path of public attributes (e.g. 'window')")
    parts = path.split(".")
    holder = source
    for depth, part in enumerate(parts):
        if not hasattr(holder, part):
            where = ".".join(parts[:depth]) or type(source).__name__
            names = sorted(k for k in vars(holder) if not k.startswith("_")) if hasattr(holder, "__dict__") else []
            raise AttributeError(
                f"ablation parameter {path!r}: {where} ({type(holder).__name__}) has no attribute {part!r}; "
                f"its attributes: {', '.join(names) or 'none'}"
            )
        if depth < len(parts) - 1:
            holder = getattr(holder, part)
    return holder, parts[-1]


def with_parameter(source: MaskletSource, path: str, value: Any) -> MaskletSource:
    """A deep copy of ``source`` with the attribute at dotted ``path`` set to ``value``.

    Args:
        source: the masklet source (not modified).
        path: attribute path, e.g. ``"window"`` or ``"proposal.points_per_side"``.
        value: the new value; converted to the current value's type (bool / int / float).

    Raises:
        AttributeError: when the path does not exist on the source.
        TypeError: when the value does not fit the attribute's type.
        ValueError: ``window`` < 1.
    """
    _resolve(source, path)  # fail on the original, before copying a model
    # Models already built are shared, not copied (the ablated parameters do not change them).
    memo = {id(v): v for v in vars(source).values() if isinstance(v, torch.nn.Module)}
    predictor = getattr(source, "_predictor", None)
    if predictor is not None:
        memo[id(predictor)] = predictor
    clone = copy.deepcopy(source, memo)
    if getattr(clone, "_proposer", None) is not None:
        clone._proposer = None  # rebuilt on first use from the new proposal parameters
    holder, name = _resolve(clone, path)
    value = _coerce(value, getattr(holder, name), path)
    if name == "window" and (not isinstance(value, int) or value < 1):
        raise ValueError(f"ablation parameter {path!r}: window must be an int >= 1, got {value!r}")
    if dataclasses.is_dataclass(holder) and type(holder).__dataclass_params__.frozen:
        object.__setattr__(holder, name, value)
    else:
        setattr(holder, name, value)
    return clone


def build_source(config: MaskletSource | Mapping[str, Any]) -> MaskletSource:
    """A source from ``{class_path, init_args}`` (parsed by jsonargparse: nested dataclasses work)."""
    if isinstance(config, MaskletSource):
        return config
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(MaskletSource, "source", required=True)
    namespace = parser.parse_object({"source": dict(config)})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return instantiate(namespace).source


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


def _sweep(source: MaskletSource | None, parameter: str, values: Sequence[Any]) -> list[tuple[str, Any, MaskletSource]]:
    """(label, JSON value, source) per value; checks the path and that every value is a distinct config."""
    if not values:
        raise ValueError("ablation needs at least one value")
    items: list[tuple[str, Any, MaskletSource]] = []
    if parameter == SOURCE_PARAMETER:
        for value in values:
            label = None
            if isinstance(value, Mapping):
                value = dict(value)
                label = value.pop("label", None)
            built = build_source(value)
            items.append((label or built.name, label or built.name, built))
        seen: dict[str, int] = {}
        for k, (label, _, built) in enumerate(items):  # duplicate names: sam2_video, sam2_video#2
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                items[k] = (f"{label}#{seen[label]}", f"{label}#{seen[label]}", built)
    else:
        if source is None:
            raise ValueError(f"ablation of {parameter!r} needs a masklet source")
        _resolve(source, parameter)
        for value in values:
            items.append((_label(value), value, with_parameter(source, parameter, value)))
    keys: dict[str, str] = {}
    for label, _, built in items:
        key = cache_key({"name": built.name, "config": built.config()})
        if key in keys:
            raise ValueError(
                f"ablation of {parameter!r}: values {keys[key]!r} and {label!r} give the same masklet configuration "
                f"(duplicate value, or {parameter!r} is not part of {type(built).__name__}.config())"
            )
        keys[key] = label
    return items


# ------------------------------------------------------------------------------ data


def clip_len_for(source: MaskletSource, data: Any, tie_clip_len: bool = True) -> int:
    """Frames per chunk (= per vote): the source's ``window`` when tied, else ``data.clip_len``."""
    window = getattr(source, "window", None)
    if tie_clip_len and isinstance(window, int) and not isinstance(window, bool):
        return window
    return int(data.clip_len)


def _metrics_row(values: Mapping[str, Any]) -> dict[str, float]:
    return {name: float(values[name]) for name in METRIC_NAMES}


# ------------------------------------------------------------------------------ outputs


def _percent(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def ablation_table(rows: Sequence[Mapping[str, Any]], parameter: str) -> str:
    """Markdown table: base rows first (value ``base``), then one row per (value, model), in %."""
    header = f"| {parameter} | Model | " + " | ".join(METRIC_NAMES) + " |"
    rule = "|:--|:--|" + "".join("--:|" for _ in METRIC_NAMES)
    lines = [header, rule]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['model']} | " + " | ".join(_percent(row[m]) for m in METRIC_NAMES) + " |"
        )
    return "\n".join(lines)


def plot_ablation(
    rows: Sequence[Mapping[str, Any]], parameter: str, path: str | Path, metrics: Sequence[str] = PLOT_METRICS
) -> Path:
    """One panel per metric: refined score vs value per model (solid), base (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(row["label"] for row in rows if not row["base"]))
    models = list(dict.fromkeys(row["model"] for row in rows))
    x = list(range(len(labels)))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics):
        for k, model in enumerate(models):
            color = colors[k % len(colors)]
            by_label = {row["label"]: row for row in rows if row["model"] == model and not row["base"]}
            ys = [
                100 * by_label[label][metric]
                if by_label.get(label) and by_label[label][metric] is not None
                else float("nan")
                for label in labels
            ]
            ax.plot(x, ys, marker="o", color=color, label=model)
            base = next((row for row in rows if row["base"] and row["model"] == model), None)
            if base is not None and base[metric] is not None:
                ax.axhline(100 * base[metric], color=color, linestyle="--", linewidth=1, alpha=0.7)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30 if parameter == SOURCE_PARAMETER else 0, fontsize=8)
        ax.set_xlabel(parameter)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, title="refined (dashed: base)", title_fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ------------------------------------------------------------------------------ the sweep


def run_ablation(
    source: MaskletSource | None,
    data: Any,
    split: str,
    parameter: str,
    values: Sequence[Any],
    cache_root: str | Path = "cache/masklets",
    out_dir: str | Path = "runs/ablation",
    methods: Sequence[str] | None = None,
    min_area: int = 0,
    min_share: float = 0.0,
    max_videos: int | None = None,
    tie_clip_len: bool = True,
    progress: bool = True,
    metrics: MetricConfig = MetricConfig(),
) -> list[dict[str, Any]]:
    """Sweeps one masklet parameter and writes the ablation table, JSON and plot.

    Args:
        source: the masklet source the values are set on (None for ``parameter="source"``).
        data: the dataset (:class:`vssam2.datasets.VideoSplits`, e.g. a VSPW / VIPSeg data
            module) with the prediction sources to refine (``pred_roots``); rebuilt with its
            init args for each value (``clip_len``, ``masklet_cache``, ``load_frames=False``).
        split: split to compute, refine and score.
        parameter: dotted attribute path of the source (``window``,
            ``proposal.points_per_side``, ...) or ``"source"`` (values = source configs).
        values: the values (``parameter="source"``: ``{class_path, init_args[, label]}`` dicts or
            sources).
        cache_root: parent folder of the masklet caches (existing entries are reused).
        out_dir: where ``ablation.md`` / ``ablation.json`` / ``ablation.png`` go.
        methods: prediction sources to refine (default: all of ``data.pred_names``).
        min_area, min_share: majority-vote thresholds (:func:`majority_vote`).
        max_videos: only the first N videos of the split (cache and scoring alike).
        tie_clip_len: chunk (and vote) with ``clip_len = source.window`` for windowed sources.
        progress: progress bars while computing masklets.
        metrics: the metric configuration of every row.

    Returns:
        Rows (also in ``ablation.json``): first one per base model, then one per (value,
        model); each ``{"parameter", "label", "value", "model", "base", <metrics as fractions,
        NaN → None>}``, refined rows also ``"cache_dir", "clip_len", "computed", "skipped"``.

    Raises:
        AttributeError: a parameter path that does not exist on the source.
        ValueError: no values, duplicate values, unknown methods, no prediction sources.
    """
    items = _sweep(source, parameter, values)
    names = list(data.pred_names)
    methods = list(methods) if methods is not None else names
    unknown = [m for m in methods if m not in names]
    if unknown:
        raise ValueError(f"methods {unknown} are not prediction sources of the data module (it has {names})")
    if not methods:
        raise ValueError("no prediction sources to refine: set data.init_args.pred_roots")
    limit = max_videos if max_videos is not None else data.max_videos
    if metrics.num_classes != data.num_classes:
        raise ValueError(f"metrics.num_classes {metrics.num_classes} != the dataset's num_classes {data.num_classes}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    base_rows: list[dict[str, Any]] = []
    refined_rows: list[dict[str, Any]] = []
    for label, value, item_source in items:
        clip_len = clip_len_for(item_source, data, tie_clip_len)
        compute_dm = data.with_options(clip_len=clip_len, masklet_cache=None, load_frames=False, max_videos=limit)
        summary = compute_cache(
            item_source, compute_dm, split, cache_root=cache_root, rank=0, world_size=1, progress=progress
        )
        if progress:
            print(f"[ablation {parameter}={label}] {summary}", flush=True)
        eval_dm = data.with_options(
            clip_len=clip_len, masklet_cache=str(summary.directory), load_frames=False, max_videos=limit
        )
        score_base = not base_rows
        scorer = ChunkScorer(
            methods,
            metrics,
            Refinement(min_area=min_area, min_share=min_share, name_format="{method}@refined"),
            score_base=score_base,
        )
        report = score_stream(eval_dm.eval_dataset(split, rank=0, world_size=1), scorer)
        if score_base:
            for m in methods:
                scores = {k: _clean(v) for k, v in _metrics_row(report.rows[m]).items()}
                base_rows.append(
                    {"parameter": parameter, "label": BASE_LABEL, "value": None, "model": m, "base": True, **scores}
                )
        for m in methods:
            scores = {k: _clean(v) for k, v in _metrics_row(report.rows[f"{m}@refined"]).items()}
            refined_rows.append(
                {
                    "parameter": parameter,
                    "label": label,
                    "value": value,
                    "model": m,
                    "base": False,
                    **scores,
                    "cache_dir": str(summary.directory),
                    "clip_len": clip_len,
                    "computed": len(summary.computed),
                    "skipped": len(summary.skipped),
                }
            )
        del item_source

    rows = base_rows + refined_rows
    table = ablation_table(rows, parameter)
    (out_dir / "ablation.md").write_text(f"# Ablation: {parameter} (split {split})\n\n{table}\n")
    record = {
        "units": "fraction in [0, 1]",
        "parameter": parameter,
        "split": split,
        "values": [value for _, value, _ in items],
        "min_area": min_area,
        "min_share": min_share,
        "max_videos": limit,
        "metric_config": metrics.to_dict(),
        "rows": rows,
    }
    (out_dir / "ablation.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    plot_ablation(rows, parameter, out_dir / "ablation.png")
    print(table, flush=True)
    return rows


# ------------------------------------------------------------------------------ command line


def build_parser():
    """The command's parser (``--config``, ``--print_config``, dotted overrides)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from vssam2.datasets import VideoSplits

    parser = ArgumentParser(
        prog="python -m vssam2.ablation",
        description="Sweep one masklet parameter (or the masklet source), refine every model, write the table.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file (repeatable)")
    parser.add_subclass_arguments(
        MaskletSource, "source", required=False, help="Masklet source the values are set on (not for parameter=source)"
    )
    parser.add_subclass_arguments(
        VideoSplits,
        "data",
        required=True,
        help="Dataset with pred_roots (class_path/init_args, e.g. datamodules.VSPWDataModule)",
    )
    parser.add_argument("--split", type=str, default="val", help="Split to score")
    parser.add_argument(
        "--parameter",
        type=str,
        required=True,
        help="Dotted source attribute (window, proposal.points_per_side, ...) or 'source'",
    )
    parser.add_argument("--values", type=list[Any], required=True, help="Values to sweep (source configs for 'source')")
    parser.add_argument("--cache_root", type=str, default="cache/masklets", help="Parent folder of the masklet caches")
    parser.add_argument("--out_dir", type=str, default="runs/ablation", help="Where ablation.md/json/png go")
    parser.add_argument("--methods", type=list[str] | None, default=None, help="Prediction sources (default: all)")
    parser.add_argument("--min_area", type=int, default=0, help="Majority vote: smallest masklet that votes")
    parser.add_argument("--min_share", type=float, default=0.0, help="Majority vote: smallest winning share")
    parser.add_argument("--max_videos", type=int | None, default=None, help="Only the first N videos")
    parser.add_argument("--metrics", type=MetricConfig, default=MetricConfig(), help="Metric configuration")
    parser.add_argument("--tie_clip_len", type=bool, default=True, help="clip_len = source.window for windowed sources")
    parser.add_argument("--progress", type=bool, default=True, help="Progress bars")
    return parser


def main(args: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parses ``args`` (default ``sys.argv[1:]``), runs the ablation, prints the table."""
    quiet_dependency_chatter()
    parser = build_parser()
    config = parser.parse_args(list(args) if args is not None else sys.argv[1:])
    if config.parameter == SOURCE_PARAMETER:
        config.source = None  # the values are the sources
    elif config.source is None:
        parser.error(f"--parameter {config.parameter} needs a source (class_path/init_args)")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    init = instantiate(config)
    rows = run_ablation(
        init.source,
        init.data,
        init.split,
        init.parameter,
        init["values"],
        cache_root=init.cache_root,
        out_dir=init.out_dir,
        methods=init.methods,
        min_area=init.min_area,
        min_share=init.min_share,
        max_videos=init.max_videos,
        tie_clip_len=init.tie_clip_len,
        progress=init.progress,
        metrics=init.metrics,
    )
    print(f"wrote {Path(init.out_dir) / 'ablation.md'}, ablation.json, ablation.png", flush=True)
    return rows


if __name__ == "__main__":
    main()
