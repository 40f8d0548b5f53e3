"""A sweep as one W&B group: a run per point (config + summary) and a run with the table and plots.

W&B's run table, parallel-coordinates and grouping views then show the ablation as the paper
does, with no manual work: every point's run config holds its swept values (``values.<name>``),
its masklet source (name and full config), the refinement rule, the base models, the vote
length and the metric configuration; its summary holds, per base model and metric,
``<model>/base/<metric>``, ``<model>/refined/<metric>`` and ``<model>/delta/<metric>`` (in %).
The group's ``table`` run logs the sweep's table (``sweep/table``, a ``wandb.Table``) and the
metric-vs-value plot (``sweep/plot``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from vssam2.metrics import METRIC_NAMES
from vssam2.sweep.report import SweepReport

TrackingMode = Literal["offline", "online"]


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def point_summaries(report: SweepReport) -> list[dict[str, float | None]]:
    """Per point, ``{"<model>/{base,refined,delta}/<metric>": value in %}``."""
    base = {row["model"]: row for row in report.rows if row["base"]}
    out: list[dict[str, float | None]] = []
    for point in report.points:
        summary: dict[str, float | None] = {}
        for row in report.rows:
            if row["base"] or row["label"] != point["label"]:
                continue
            model = row["model"]
            for metric in METRIC_NAMES:
                summary[f"{model}/base/{metric}"] = _percent(base[model][metric])
                summary[f"{model}/refined/{metric}"] = _percent(row[metric])
                summary[f"{model}/delta/{metric}"] = _percent(row["delta"][metric])
        out.append(summary)
    return out


def point_configs(report: SweepReport, group: str, extra: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per point, the W&B run config: everything that changes the point's numbers."""
    configs = []
    for point in report.points:
        configs.append(
            {
                "sweep": {"group": group, "parameters": report.parameters, "split": report.split},
                "point": point["label"],
                "values": dict(point["values"]),
                "source": point["source"],
                "refinement": {"rule": "majority_vote", "min_area": point["min_area"], "min_share": point["min_share"]},
                "clip_len": point["clip_len"],
                "masklet_key": point["masklet_key"],
                "cache_dir": point["cache_dir"],
                "base_models": list(report.methods),
                "metric_config": report.metrics.to_dict(),
                **({"run": dict(extra)} if extra else {}),
            }
        )
    return configs


def table_columns(report: SweepReport) -> list[str]:
    """Columns of the group's ``wandb.Table``."""
    return [*report.parameters, "model", *METRIC_NAMES, *(f"delta {m}" for m in METRIC_NAMES)]


def table_data(report: SweepReport) -> list[list[Any]]:
    """Rows of the group's ``wandb.Table`` (refined rows; values in %; deltas empty for base rows)."""
    data = []
    for row in report.rows:
        keys = ["base"] * len(report.parameters) if row["base"] else [str(row["values"][p]) for p in report.parameters]
        scores = [_percent(row[m]) for m in METRIC_NAMES]
        deltas = [None] * len(METRIC_NAMES) if row["base"] else [_percent(row["delta"][m]) for m in METRIC_NAMES]
        data.append([*keys, row["model"], *scores, *deltas])
    return data


def log_sweep_group(
    report: SweepReport,
    group: str,
    project: str,
    save_dir: str | Path,
    mode: TrackingMode = "offline",
    plot: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Logs the sweep to W&B as one group; returns the run folders written.

    Args:
        report: the sweep's results.
        group: the W&B group (one per sweep run, e.g. ``ablation_window/version_0``).
        project: the W&B project.
        save_dir: where W&B writes its ``wandb/`` folder.
        mode: "offline" (files only, ``wandb sync`` later) or "online".
        plot: the metric-vs-value PNG to attach to the table run.
        extra: more run config shared by every point (data set, split, ...).
    """
    import wandb

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    folders: list[Path] = []
    # One console line per point run would bury the table; the group is announced once by the caller.
    settings = wandb.Settings(silent=True, console="off")
    common = {
        "project": project,
        "group": group,
        "dir": str(save_dir),
        "mode": mode,
        "reinit": "create_new",
        "settings": settings,
    }
    for point, config, summary in zip(report.points, point_configs(report, group, extra), point_summaries(report)):
        run = wandb.init(name=f"{group}/{point['label']}", job_type="sweep-point", config=config, **common)
        run.summary.update(summary)
        folders.append(Path(run.dir).parent)
        run.finish()
    run = wandb.init(
        name=f"{group}/table",
        job_type="sweep-table",
        config={"sweep": {"group": group, "parameters": report.parameters, "split": report.split}, "grid": report.grid},
        **common,
    )
    payload: dict[str, Any] = {"sweep/table": wandb.Table(columns=table_columns(report), data=table_data(report))}
    if plot is not None and Path(plot).is_file():
        payload["sweep/plot"] = wandb.Image(str(plot))
    run.log(payload)
    folders.append(Path(run.dir).parent)
    run.finish()
    return folders
