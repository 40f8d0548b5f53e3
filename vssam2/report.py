"""Results as people read them: paper-style Markdown tables, JSON, per-class plots, overlays."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vssam2.labels import colorize
from vssam2.metrics import METRIC_NAMES

# The paper prints percentages with one decimal.
DECIMALS: int = 1


def _number(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.item())
    return float(value)


def _percent(value: float, decimals: int = DECIMALS) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.{decimals}f}"


def results_to_json(
    results: Mapping[str, Mapping[str, Any]], class_names: Sequence[str], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Plain-JSON form of ``{method: {metric: value, "per_class_iou": (C,)}}`` (fractions, NaN → null)."""

    def clean(x: float) -> float | None:
        return None if math.isnan(x) else x

    methods = {}
    for method, values in results.items():
        entry: dict[str, Any] = {name: clean(_number(values[name])) for name in values if name != "per_class_iou"}
        if "per_class_iou" in values:
            per_class = [_number(v) for v in values["per_class_iou"]]
            entry["per_class_iou"] = {name: clean(v) for name, v in zip(class_names, per_class)}
        methods[method] = entry
    return {"units": "fraction in [0, 1]", "methods": methods, **(extra or {})}


def markdown_table(
    results: Mapping[str, Mapping[str, Any]], metrics: Sequence[str] = METRIC_NAMES, decimals: int = DECIMALS
) -> str:
    """Paper-style table: one row per method, metrics in percent."""
    header = "| Method | " + " | ".join(metrics) + " |"
    rule = "|:--|" + "".join("--:|" for _ in metrics)
    rows = [
        f"| {method} | " + " | ".join(_percent(_number(values[m]), decimals) for m in metrics) + " |"
        for method, values in results.items()
    ]
    return "\n".join([header, rule, *rows])


def per_class_table(
    results: Mapping[str, Mapping[str, Any]], class_names: Sequence[str], decimals: int = DECIMALS
) -> str:
    """Per-class IoU (percent), one column per method, classes without GT pixels left out."""
    methods = list(results)
    per_class = np.array([[_number(v) for v in results[m]["per_class_iou"]] for m in methods])  # (M, C)
    present = ~np.all(np.isnan(per_class), axis=0)
    header = "| Class | " + " | ".join(methods) + " |"
    rule = "|:--|" + "".join("--:|" for _ in methods)
    rows = [
        f"| {class_names[c]} | " + " | ".join(_percent(per_class[k, c], decimals) for k in range(len(methods))) + " |"
        for c in np.flatnonzero(present)
    ]
    return "\n".join([header, rule, *rows])


def plot_per_class_iou(results: Mapping[str, Mapping[str, Any]], class_names: Sequence[str], path: str | Path) -> Path:
    """Horizontal grouped bar plot of per-class IoU (classes with GT pixels), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    per_class = np.array([[_number(v) for v in results[m]["per_class_iou"]] for m in methods]) * 100  # (M, C)
    present = np.flatnonzero(~np.all(np.isnan(per_class), axis=0))
    # Sort by the first method's IoU so the weakest classes stand at the top.
    order = present[np.argsort(np.nan_to_num(per_class[0, present], nan=-1.0))]
    height = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.3 * len(order) * max(1, len(methods) / 2)))
    y = np.arange(len(order))
    for k, method in enumerate(methods):
        ax.barh(y + k * height, np.nan_to_num(per_class[k, order]), height=height, label=method)
    ax.set_yticks(y + height * (len(methods) - 1) / 2)
    ax.set_yticklabels([class_names[c] for c in order], fontsize=8)
    ax.set_xlabel("IoU (%)")
    ax.set_xlim(0, 100)
    ax.set_title("Per-class IoU")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(len(methods), 4), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(confmat: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "Confusion") -> Path:
    """Row-normalised confusion matrix (GT rows, predicted columns + "none") of the classes
    with GT pixels, as a PNG heat map.

    Args:
        confmat: (C, C + 1) pixel counts, the last column "no prediction".
        class_names: C class names.
        path: output PNG.
        title: plot title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confmat = np.asarray(confmat, dtype=np.float64)
    num_classes = confmat.shape[0]
    rows = np.flatnonzero(confmat.sum(axis=1) > 0)
    cols = np.concatenate([rows, [num_classes]])
    share = confmat[np.ix_(rows, cols)] / confmat[rows].sum(axis=1, keepdims=True)
    size = 2.0 + 0.28 * len(cols)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([class_names[c] for c in rows] + ["none"], rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([class_names[c] for c in rows], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def delta_table(
    results: Mapping[str, Mapping[str, Any]],
    pairs: Sequence[tuple[str, str]],
    metrics: Sequence[str] = METRIC_NAMES,
    decimals: int = DECIMALS,
) -> str:
    """Markdown table of refined − base differences (percentage points) per (base, refined) pair."""
    header = "| Refinement | " + " | ".join(f"Δ{m}" for m in metrics) + " |"
    rule = "|:--|" + "".join("--:|" for _ in metrics)
    rows = []
    for base, refined in pairs:
        cells = []
        for m in metrics:
            delta = 100 * (_number(results[refined][m]) - _number(results[base][m]))
            cells.append("–" if math.isnan(delta) else f"{delta:+.{decimals}f}")
        rows.append(f"| {base} → {refined} | " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *rows])


def plot_per_class_delta(
    results: Mapping[str, Mapping[str, Any]],
    pairs: Sequence[tuple[str, str]],
    class_names: Sequence[str],
    path: str | Path,
) -> Path:
    """Per-class IoU change (refined − base, points) for each pair: which classes gain, which lose."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deltas = (
        np.array(
            [
                [
                    _number(r) - _number(b)
                    for b, r in zip(results[base]["per_class_iou"], results[refined]["per_class_iou"])
                ]
                for base, refined in pairs
            ]
        )
        * 100
    )  # (P, C)
    present = np.flatnonzero(~np.all(np.isnan(deltas), axis=0))
    order = present[np.argsort(np.nan_to_num(np.nanmean(deltas[:, present], axis=0), nan=0.0))]
    height = 0.8 / max(len(pairs), 1)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.3 * len(order) * max(1, len(pairs) / 2)))
    y = np.arange(len(order))
    for k, (base, refined) in enumerate(pairs):
        values = np.nan_to_num(deltas[k, order])
        ax.barh(y + k * height, values, height=height, label=f"{refined} − {base}")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y + height * (len(pairs) - 1) / 2)
    ax.set_yticklabels([class_names[c] for c in order], fontsize=8)
    ax.set_xlabel("IoU change (points)")
    ax.set_title("Per-class IoU change from refinement")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(len(pairs), 3), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def colorize_segments(segments: np.ndarray) -> np.ndarray:
    """Colours a segment map: (H, W) ids → (H, W, 3) uint8, a hashed colour per id, 0 black."""
    ids = segments.astype(np.uint64)
    hashed = (ids * np.uint64(2654435761)) & np.uint64(0xFFFFFF)  # Knuth's multiplicative hash
    rgb = np.stack([(hashed >> np.uint64(s)) & np.uint64(0xFF) for s in (16, 8, 0)], axis=-1).astype(np.uint8)
    rgb[segments == 0] = 0
    return rgb


def overlay_panel(
    frame: np.ndarray,
    gt: np.ndarray,
    preds: Mapping[str, np.ndarray],
    alpha: float = 0.55,
    segments: np.ndarray | None = None,
) -> np.ndarray:
    """Side-by-side picture: the frame, GT, each prediction, then the masklets, titled.

    Args:
        frame: (H, W, 3) uint8 RGB.
        gt: (H, W) eval ids (255 ignore, drawn black).
        preds: name → (H, W) eval ids (base and refined predictions).
        alpha: weight of the label colours.
        segments: (H, W) masklet ids, drawn last with a colour per masklet.

    Returns:
        (H, W · (2 + len(preds) [+ 1]), 3) uint8.
    """
    from PIL import Image, ImageDraw

    image = frame.astype(np.float32)
    panels = [image]
    for labels in [gt, *preds.values()]:
        panels.append((1 - alpha) * image + alpha * colorize(labels).astype(np.float32))
    titles = ["frame", "GT", *preds]
    if segments is not None:
        panels.append((1 - alpha) * image + alpha * colorize_segments(segments).astype(np.float32))
        titles.append("masklets")
    picture = Image.fromarray(np.concatenate(panels, axis=1).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for k, title in enumerate(titles):
        x = k * frame.shape[1] + 3
        draw.rectangle((x - 2, 1, x + 6 * len(title) + 2, 12), fill=(0, 0, 0))
        draw.text((x, 1), title, fill=(255, 255, 255))
    return np.asarray(picture)


def write_results(
    out_dir: str | Path,
    results: Mapping[str, Mapping[str, Any]],
    class_names: Sequence[str],
    extra: Mapping[str, Any] | None = None,
    pairs: Sequence[tuple[str, str]] = (),
) -> dict[str, Path]:
    """Writes results.json, results.md and per_class_iou.png into ``out_dir``.

    With ``pairs`` of (base, refined) rows, also the differences: a Δ table in results.md,
    ``deltas`` in results.json and per_class_delta.png.

    Returns:
        ``{"json": …, "markdown": …, "plot": …}`` paths (and ``"delta_plot"`` with pairs).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "results.json",
        "markdown": out_dir / "results.md",
        "plot": out_dir / "per_class_iou.png",
    }
    data = results_to_json(results, class_names, extra)
    markdown = "## Results (%)\n\n" + markdown_table(results) + "\n\n"
    if pairs:
        data["deltas"] = {
            f"{base} -> {refined}": {m: _number(results[refined][m]) - _number(results[base][m]) for m in METRIC_NAMES}
            for base, refined in pairs
        }
        markdown += "## Refinement gains (points)\n\n" + delta_table(results, pairs) + "\n\n"
        paths["delta_plot"] = plot_per_class_delta(results, pairs, class_names, out_dir / "per_class_delta.png")
    paths["json"].write_text(json.dumps(data, indent=2) + "\n")
    paths["markdown"].write_text(markdown + "## Per-class IoU (%)\n\n" + per_class_table(results, class_names) + "\n")
    plot_per_class_iou(results, class_names, paths["plot"])
    return paths
