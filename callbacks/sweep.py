"""Writes and shows a sweep's results: Markdown table, JSON, plot, and the W&B group."""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer

from callbacks.run_dir import run_directory, wandb_logger
from vssam2 import label_kernels
from vssam2.sweep.module import MaskletSweep
from vssam2.sweep.report import sweep_table, write_sweep
from vssam2.sweep.tracking import log_sweep_group


class SweepWriter(Callback):
    """After a :class:`~vssam2.sweep.MaskletSweep` test (or validate) run, on global rank 0:

    prints the table, writes ``sweep.md``, ``sweep.json`` and ``sweep.png`` into the run
    directory and, when the trainer logs to W&B, logs the sweep as one W&B group (a run per
    point, a run with the table and plot; :func:`vssam2.sweep.tracking.log_sweep_group`) in the
    W&B logger's project, folder and mode.
    """

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, pl_module)

    def _write(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out_dir = run_directory(trainer)  # a collective call: every rank must make it
        if not isinstance(pl_module, MaskletSweep) or pl_module.sweep_report is None or not trainer.is_global_zero:
            return
        report = pl_module.sweep_report
        # Provenance: the numbers are the same either way (tests/test_kernels_off.py).
        paths = write_sweep(out_dir, report, extra={"compiled_kernels": label_kernels.AVAILABLE})
        print(f"\n{sweep_table(report)}\n", flush=True)
        logger = wandb_logger(trainer)
        if logger is not None:
            experiment = logger.experiment
            group = experiment.name or logger.name
            offline = bool(getattr(experiment.settings, "_offline", False)) or experiment.settings.mode == "offline"
            datamodule = trainer.datamodule
            extra = {key: str(getattr(datamodule, key)) for key in ("root", "test_split") if hasattr(datamodule, key)}
            folders = log_sweep_group(
                report,
                group=group,
                project=experiment.project or "vssam2",
                save_dir=logger.save_dir or out_dir,
                mode="offline" if offline else "online",
                plot=paths["plot"],
                extra=extra,
            )
            print(
                f"W&B group {group!r}: {len(folders) - 1} point runs and a table run in {folders[0].parent}"
                + (" (offline: `wandb sync` them later)" if offline else ""),
                flush=True,
            )
        print(f"wrote {paths['table']}, {paths['json'].name}, {paths['plot'].name}", flush=True)
