"""Writes and shows the results of an evaluation: Markdown table, JSON, per-class plot, W&B table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from callbacks.run_dir import run_directory, wandb_logger
from vssam2 import label_kernels
from vssam2.labels import vspw_classes
from vssam2.metrics import METRIC_NAMES
from vssam2.replay import PredictionReplay
from vssam2.report import delta_table, markdown_table, per_class_table, plot_confusion, write_results


class ResultsWriter(Callback):
    """After ``validate`` / ``test``: prints the paper-style table and writes the result files.

    Not after the validation passes of ``fit``: those are logged as curves.

    Reads the module's :class:`~vssam2.scoring.ScoreReport` (``pl_module.report``, which every
    :class:`~vssam2.replay.PredictionReplay` sets at the end of an evaluation epoch); writes
    ``results.json``, ``results.md``, ``per_class_iou.png`` (with refined rows also
    ``per_class_delta.png``, with a confusion matrix in the report ``confusion.png``) into the
    run directory (the first logger's version folder) on global rank 0, and logs the tables and
    plots to W&B when a WandbLogger is attached.

    Args:
        print_per_class: also print the per-class IoU table on stdout.
        class_names: class name per id; the datamodule's (or the 124-class table) by default.
    """

    def __init__(self, print_per_class: bool = True, class_names: Sequence[str] | None = None) -> None:
        self.print_per_class = print_per_class
        self.class_names = list(class_names) if class_names is not None else None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A validation pass inside fit is logged as curves (val/mIoU, ...); its full tables
        # every epoch would be noise, and its files would be overwritten by the test anyway.
        if not trainer.sanity_checking and trainer.state.fn != TrainerFn.FITTING:
            self._report(trainer, pl_module, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer, pl_module, "test")

    def _report(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        out_dir = run_directory(trainer)  # a collective call: every rank must make it
        report = pl_module.report if isinstance(pl_module, PredictionReplay) else None
        if report is None or not report.rows or not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        class_names = self.class_names or list(getattr(datamodule, "class_names", None) or vspw_classes().names)
        results, pairs = report.rows, report.pairs
        extra: dict[str, Any] = {
            "stage": stage,
            "videos": report.videos,
            "frames": report.frames,
            "metric_config": report.metrics.to_dict(),
            # Provenance: the numbers are the same either way (tests/test_kernels_off.py).
            "compiled_kernels": label_kernels.AVAILABLE,
        }
        if report.cost is not None:
            extra["refinement_cost"] = report.cost
        skipped = list(getattr(datamodule, "skipped", []) or [])
        if skipped:
            extra["skipped_videos"] = [{"video": v, "reason": r} for v, r in skipped]
        for key in ("root", "test_split", "val_split"):
            if hasattr(datamodule, key):
                extra[key] = str(getattr(datamodule, key))
        paths = write_results(out_dir, results, class_names, extra, pairs)
        for row, confmat in report.confusion.items():
            paths["confusion"] = plot_confusion(
                confmat.numpy(), class_names, out_dir / "confusion.png", f"{row}: confusion ({stage})"
            )

        lines = [f"\n{markdown_table(results)}\n"]
        if pairs:
            lines.append(f"Refinement gains (points):\n\n{delta_table(results, pairs)}\n")
        if self.print_per_class:
            lines.append(f"Per-class IoU (%):\n\n{per_class_table(results, class_names)}\n")
        lines.append(f"Scored {report.videos} videos, {report.frames} frames ({stage}).")
        cost = report.cost
        if cost:
            lines.append(
                f"Refinement cost on {cost['device']}: masklets {cost['masklets_fps']:.1f} frames/s, "
                f"refinement rules (every method) {cost['refine_fps']:.1f} frames/s."
            )
        if skipped:
            lines.append(f"WARNING: {len(skipped)} videos were skipped as bad data (listed in results.json).")
        lines.append("Results: " + ", ".join(str(p) for p in paths.values()))
        print("\n".join(lines), flush=True)

        logger = wandb_logger(trainer)
        if logger is not None:
            import wandb

            columns = ["method", *METRIC_NAMES]
            rows = [[m, *(float(v[k]) * 100 for k in METRIC_NAMES)] for m, v in results.items()]
            media = {
                f"{stage}/results": wandb.Table(columns=columns, data=rows),
                f"{stage}/per_class_iou": wandb.Image(str(paths["plot"])),
            }
            if "delta_plot" in paths:
                media[f"{stage}/per_class_delta"] = wandb.Image(str(paths["delta_plot"]))
                media[f"{stage}/refinement_gains"] = wandb.Table(
                    columns=["base", "refined", *(f"Δ{k}" for k in METRIC_NAMES)],
                    data=[
                        [b, r, *((float(results[r][k]) - float(results[b][k])) * 100 for k in METRIC_NAMES)]
                        for b, r in pairs
                    ],
                )
            if "confusion" in paths:
                media[f"{stage}/confusion"] = wandb.Image(str(paths["confusion"]))
            logger.experiment.log(media)
