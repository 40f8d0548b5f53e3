"""The LightningCLI shared by ``train.py`` and ``evaluate.py``.

On top of Lightning's CLI it adds the run's loggers: unless the config sets
``trainer.logger`` itself, a run logs to CSV and to W&B (offline by default; nothing leaves
the machine until ``wandb sync``) under ``<trainer.default_root_dir>/<run.name>/version_N/``,
which is also where reports land.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal, get_args

from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from vssam2.console import quiet_dependency_chatter

WandbMode = Literal["offline", "online", "disabled"]
WANDB_MODES: tuple[WandbMode, ...] = get_args(WandbMode)


def run_loggers(root: str, name: str, wandb_mode: WandbMode, wandb_project: str) -> list[Logger]:
    """CSV logger (defines the versioned run directory ``<root>/<name>/version_N``) + W&B logger.

    Args:
        root: parent directory of all runs.
        name: run / experiment name.
        wandb_mode: "offline" (default: files only), "online" or "disabled".
        wandb_project: W&B project.
    """
    if wandb_mode not in WANDB_MODES:
        raise ValueError(f"run.wandb must be one of {WANDB_MODES}, got {wandb_mode!r}")
    csv = CSVLogger(save_dir=root, name=name)
    loggers: list[Logger] = [csv]
    if wandb_mode != "disabled" and os.environ.get("WANDB_MODE") != "disabled":
        # W&B keeps its own folder beside the versions (runs/<name>/wandb/): creating it inside
        # the version folder first would make the CSV logger think it is reusing an old run.
        save_dir = os.path.join(root, name)
        os.makedirs(save_dir, exist_ok=True)
        wandb = WandbLogger(
            project=wandb_project,
            name=f"{name}/version_{csv.version}",
            save_dir=save_dir,
            offline=wandb_mode == "offline",
        )
        # Lightning always passes anonymous=None, which wandb now answers with a deprecation
        # warning at every run; leaving the key out is what wandb asks for.
        wandb._wandb_init.pop("anonymous", None)
        loggers.append(wandb)
    return loggers


class VSSCLI(LightningCLI):
    """LightningCLI with vssam2's run options (``--run.name``, ``--run.wandb``) and default callbacks."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run.name", type=str, default="vssam2", help="Run name: runs/<name>/version_N/")
        parser.add_argument(
            "--run.wandb", type=WandbMode, default="offline", help="W&B mode: offline (default), online or disabled"
        )
        parser.add_argument("--run.wandb_project", type=str, default="vssam2", help="W&B project")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("logger") in (None, True):
            run = self._get(self.config_init, "run")
            root = trainer_config.get("default_root_dir") or "runs"
            kwargs["logger"] = run_loggers(root, run.name, run.wandb, run.wandb_project)
        return super().instantiate_trainer(**kwargs)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in ("validate", "test"):
            # The results writer prints the paper-style table; Lightning's box of the same
            # logged numbers would repeat it (--verbose true brings it back).
            parser.set_defaults(verbose=False)
        return parser


def cli_main(
    model_class: type[LightningModule] | None = None,
    datamodule_class: type[LightningDataModule] | None = None,
    args: list[str] | None = None,
    callbacks: Sequence[Callback] = (),
    **kwargs: Any,
) -> VSSCLI:
    """Runs the CLI (subcommands fit / validate / test / predict).

    Args:
        model_class: base class of the model (subclasses selectable with ``class_path``).
        datamodule_class: base class of the datamodule.
        args: command-line arguments (``sys.argv`` by default).
        callbacks: callbacks every run gets, after those of the config (``evaluate.py`` passes
            the results writer and the overlays).
        kwargs: passed on to :class:`VSSCLI`.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    quiet_dependency_chatter()
    kwargs.setdefault("trainer_defaults", {"callbacks": list(callbacks)})
    cli = VSSCLI(
        model_class,
        datamodule_class,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        **kwargs,
    )
    # Close the W&B run: Lightning leaves it open, and a later run in the same process (a
    # notebook, a sweep, the tests) would otherwise keep logging into it.
    if any(isinstance(lg, WandbLogger) for lg in getattr(cli.trainer, "loggers", [])):
        import wandb

        wandb.finish()
    return cli


def train_main(
    model_class: type[LightningModule] | None = None,
    datamodule_class: type[LightningDataModule] | None = None,
    args: list[str] | None = None,
    callbacks: Sequence[Callback] = (),
) -> VSSCLI:
    """``train.py``: fit, then test the best checkpoint (``--test false`` to skip testing).

    Takes the options of ``evaluate.py`` plus ``--ckpt_path`` (resume a fit: epoch, step,
    optimizer and scheduler continue from the checkpoint) and ``--test``.

    Args:
        model_class: base class of the model.
        datamodule_class: base class of the datamodule.
        args: command-line arguments (``sys.argv`` by default).
        callbacks: callbacks every run gets, after those of the config.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    quiet_dependency_chatter()

    class TrainCLI(VSSCLI):
        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            super().add_arguments_to_parser(parser)
            parser.add_argument("--ckpt_path", type=str | None, default=None, help="Checkpoint to resume fitting from")
            parser.add_argument("--test", type=bool, default=True, help="Test the best checkpoint after fitting")

    cli = TrainCLI(
        model_class,
        datamodule_class,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": list(callbacks)},
    )
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
        if cli.config.get("test", True):
            callback = cli.trainer.checkpoint_callback
            best = "best" if callback is not None and getattr(callback, "best_model_path", "") else None
            cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)
    finally:
        if any(isinstance(lg, WandbLogger) for lg in getattr(cli.trainer, "loggers", [])):
            import wandb

            wandb.finish()
    return cli
