"""The results of a sweep: rows, the paper-style Markdown table, JSON and metric-vs-value plots."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vssam2.atomic import atomic_write_bytes
from vssam2.metrics import METRIC_NAMES, MetricConfig
from vssam2.scoring import ScoreReport
from vssam2.sweep.grid import SOURCE_PARAMETER, SweepPoint

#: Metrics drawn in the plot.
PLOT_METRICS: tuple[str, ...] = ("mIoU", "mBIoU", "mVC8")
#: Label of the base models' rows.
BASE_LABEL = "base"


def _clean(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


@dataclass
class SweepReport:
    """What a sweep found.

    Attributes:
        grid: ``{parameter: [values]}`` as configured (sources as their configs).
        split: the split scored.
        points: per point: label, values, masklet key and cache folder, clip_len, refinement,
            source name and config, videos computed / read from the cache (all ranks).
        rows: one per base model, then one per (point, model): ``label``, ``values``, ``model``,
            ``base``, the five metrics (fractions, NaN → None) and, for refined rows,
            ``delta`` (refined − base per metric).
        methods: the base models.
        metrics: the metric configuration of every row.
        videos: videos scored (all ranks).
        frames: frames scored (all ranks).
        cost: masklet frames computed in this run and the slowest rank's seconds.
    """

    grid: dict[str, list[Any]]
    split: str
    points: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    methods: list[str]
    metrics: MetricConfig = field(default_factory=MetricConfig)
    videos: int = 0
    frames: int = 0
    cost: dict[str, Any] = field(default_factory=dict)

    @property
    def parameters(self) -> list[str]:
        """The swept parameters, in table order."""
        return list(self.grid)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (``sweep.json``)."""
        return {
            "units": "fraction in [0, 1]",
            "parameters": self.parameters,
            "grid": self.grid,
            "split": self.split,
            "videos": self.videos,
            "frames": self.frames,
            "metric_config": self.metrics.to_dict(),
            "cost": self.cost,
            "points": self.points,
            "rows": self.rows,
        }


def sweep_rows(
    points: Sequence[SweepPoint],
    methods: Sequence[str],
    base: ScoreReport,
    refined: Sequence[ScoreReport],
    refined_rows: Sequence[Mapping[str, str]],
) -> list[dict[str, Any]]:
    """Table rows: one per base model, then one per (point, model) with its delta to the base.

    ``refined_rows[i][method]`` names the refined row of ``method`` in point i's report.
    """
    rows: list[dict[str, Any]] = []
    base_scores: dict[str, dict[str, float | None]] = {}
    for method in methods:
        scores = {name: _clean(base.rows[method][name]) for name in METRIC_NAMES}
        base_scores[method] = scores
        rows.append({"label": BASE_LABEL, "values": None, "model": method, "base": True, **scores})
    for point, report, names in zip(points, refined, refined_rows):
        for method in methods:
            scores = {name: _clean(report.rows[names[method]][name]) for name in METRIC_NAMES}
            delta = {
                name: None
                if scores[name] is None or base_scores[method][name] is None
                else scores[name] - base_scores[method][name]
                for name in METRIC_NAMES
            }
            rows.append(
                {
                    "label": point.label,
                    "values": dict(point.values),
                    "model": method,
                    "base": False,
                    **scores,
                    "delta": delta,
                }
            )
    return rows


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def sweep_table(report: SweepReport) -> str:
    """Paper-style Markdown table in %: one column per swept parameter, then Model and the metrics."""
    parameters = report.parameters
    header = "| " + " | ".join([*parameters, "Model", *METRIC_NAMES]) + " |"
    rule = "|" + ":--|" * (len(parameters) + 1) + "--:|" * len(METRIC_NAMES)
    lines = [header, rule]
    for row in report.rows:
        keys = [BASE_LABEL] * len(parameters) if row["base"] else [_cell(row["values"][p]) for p in parameters]
        lines.append("| " + " | ".join([*keys, row["model"], *(_percent(row[m]) for m in METRIC_NAMES)]) + " |")
    return "\n".join(lines)


def plot_sweep(report: SweepReport, path: str | Path, metrics: Sequence[str] = PLOT_METRICS) -> Path:
    """One panel per metric against the first parameter: a line per model (and per combination
    of the other parameters), the base model dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parameters = report.parameters
    first, others = parameters[0], parameters[1:]
    refined = [row for row in report.rows if not row["base"]]
    xs = list(dict.fromkeys(_cell(row["values"][first]) for row in refined))
    series: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in refined:
        rest = ", ".join(f"{p}={_cell(row['values'][p])}" for p in others)
        series.setdefault((row["model"], rest), {})[_cell(row["values"][first])] = row
    models = list(dict.fromkeys(row["model"] for row in report.rows))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["o-", "s-", "^-", "v-", "D-", "x-"]
    rests = list(dict.fromkeys(rest for _, rest in series))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for (model, rest), by_x in series.items():
            color = colors[models.index(model) % len(colors)]
            ys = [100 * by_x[x][metric] if x in by_x and by_x[x][metric] is not None else float("nan") for x in xs]
            label = model if not rest else f"{model} ({rest})"
            ax.plot(range(len(xs)), ys, styles[rests.index(rest) % len(styles)], color=color, label=label)
        for row in report.rows:
            if row["base"] and row[metric] is not None:
                color = colors[models.index(row["model"]) % len(colors)]
                ax.axhline(100 * row[metric], color=color, linestyle="--", linewidth=1, alpha=0.7)
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, rotation=30 if first == SOURCE_PARAMETER else 0, fontsize=8)
        ax.set_xlabel(first)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6, title="refined (dashed: base)", title_fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_sweep(
    out_dir: str | Path, report: SweepReport, title: str = "", extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Writes ``sweep.md`` (the table), ``sweep.json`` (with ``extra`` merged in) and ``sweep.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    heading = title or f"Sweep of {', '.join(report.parameters)} (split {report.split})"
    paths = {"table": out_dir / "sweep.md", "json": out_dir / "sweep.json", "plot": out_dir / "sweep.png"}
    atomic_write_bytes(paths["table"], f"# {heading}\n\n{sweep_table(report)}\n".encode())
    record = {**report.to_dict(), **(extra or {})}
    atomic_write_bytes(paths["json"], (json.dumps(record, indent=2, default=str) + "\n").encode())
    plot_sweep(report, paths["plot"])
    return paths
