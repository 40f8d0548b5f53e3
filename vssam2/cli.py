"""The LightningCLI shared by ``train.py`` and ``evaluate.py``.

On top of Lightning's CLI it adds the run's loggers: unless the config sets
``trainer.logger`` itself, a run logs to CSV and to W&B (offline by default; nothing leaves
the machine until ``wandb sync``) under ``<trainer.default_root_dir>/<run.name>/version_N/``,
which is also where reports land. Every logger also gets the whole parsed configuration and
the software it ran on (:class:`RunConfigCallback`; the layout is in docs/design.md, "What a
run records").
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

import vssam2
from vssam2.console import quiet_dependency_chatter
from vssam2.host_kernels import compiled_kernels

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


# The top-level keys the run's loggers get beside the modules' own hyperparameters.
CONFIG_KEY = "config"
ENV_KEY = "env"

# Distributions whose version can change a number; the first installed name of each entry counts.
VERSIONED: dict[str, tuple[str, ...]] = {
    "vssam2": ("vssam2",),
    "torch": ("torch",),
    "sam2": ("sam2", "SAM-2"),
    "lightning": ("lightning",),
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
}


def _distribution_version(names: tuple[str, ...]) -> str | None:
    """The version of the first installed distribution among ``names``, None if none is."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def git_commit(root: Path | None = None) -> str | None:
    """The commit checked out in the git checkout at ``root`` (by default the folder holding
    this package, i.e. a source checkout of vssam2).

    Read from the files under ``root/.git`` (loose ref, packed refs, detached HEAD, worktrees),
    so no git process runs. Only ``root`` itself is looked at, not its parents: a vssam2
    installed into a virtual environment inside some other checkout must not report that
    checkout's commit. None when ``root`` is not a git checkout (an installed wheel) or the ref
    cannot be resolved (a fresh repository without commits). Uncommitted changes are not seen.
    """
    folder = (root or Path(vssam2.__file__).resolve().parents[1]).resolve()
    dot_git = folder / ".git"
    if not dot_git.exists():
        return None
    git_dir = dot_git
    if dot_git.is_file():  # a worktree or submodule: ".git" names the real folder
        text = dot_git.read_text().strip()
        if not text.startswith("gitdir:"):
            return None
        git_dir = (folder / text[len("gitdir:") :].strip()).resolve()
    common = git_dir
    if (git_dir / "commondir").is_file():  # a worktree keeps its branches in the main repository
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None  # detached HEAD holds the commit itself
    ref = head[len("ref:") :].strip()
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text().strip() or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            commit, _, name = line.partition(" ")
            if name.strip() == ref:
                return commit
    return None


def run_environment(trainer: Trainer) -> dict[str, Any]:
    """What a run's numbers depend on besides its parsed config: code, library versions, kernels.

    Keys: ``git_commit`` (None outside a git checkout), ``python``, one version per entry of
    :data:`VERSIONED` (None where not installed), ``device`` (the trainer's root device) and
    ``compiled_kernels`` (whether the compiled label-map kernels run on that device, as
    :func:`vssam2.host_kernels.compiled_kernels` decides for its tensors).
    """
    device = trainer.strategy.root_device
    return {
        "git_commit": git_commit(),
        "python": platform.python_version(),
        **{key: _distribution_version(names) for key, names in VERSIONED.items()},
        "device": str(device),
        "compiled_kernels": compiled_kernels(torch.empty(0, device=device)),
    }


class RunConfigCallback(SaveConfigCallback):
    """Lightning's config.yaml, plus the same parsed config and the run's environment in every logger.

    Each logger's hyperparameters get two top-level keys beside those the LightningModule and
    the datamodule log themselves (``save_hyperparameters``): :data:`CONFIG_KEY`, the whole
    parsed configuration as a nested JSON-safe dict (``model``, ``data``, ``trainer`` with its
    callbacks as ``class_path`` / ``init_args``, ``run``, ``seed_everything``, ``ckpt_path``…:
    what config.yaml holds, plus the targets of linked arguments), and :data:`ENV_KEY`,
    :func:`run_environment`. Lightning calls :meth:`save_config` once, on rank 0, in the
    trainer's setup (not at all under ``fast_dev_run``, which also logs nothing).
    """

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Logs the parsed config and the environment to every logger of ``trainer``.

        Raises:
            ValueError: if the module or the datamodule logs a hyperparameter named
                :data:`CONFIG_KEY` or :data:`ENV_KEY`: Lightning would overwrite this record with it.
        """
        modules: list[LightningModule | LightningDataModule] = [pl_module]
        if trainer.datamodule is not None:
            modules.append(trainer.datamodule)
        for module in modules:
            taken = {CONFIG_KEY, ENV_KEY} & set(module.hparams_initial)
            if taken:
                raise ValueError(
                    f"{type(module).__name__} saves the hyperparameter(s) {sorted(taken)}, which the run's "
                    f"loggers keep for the parsed config and the environment (vssam2.cli.RunConfigCallback): "
                    f"rename the argument"
                )
        # jsonargparse's own serialisation (the one config.yaml is written with) makes paths and
        # class configs plain JSON. Targets of linked arguments stay in: config.yaml leaves them
        # out because parsing it back sets them, but here they are values a number depends on.
        parsed = json.loads(self.parser.dump(self.config, format="json", skip_none=False, skip_link_targets=False))
        record = {CONFIG_KEY: parsed, ENV_KEY: run_environment(trainer)}
        for logger in trainer.loggers:
            logger.log_hyperparams(record)


class VSSCLI(LightningCLI):
    """LightningCLI with vssam2's run options (``--run.name``, ``--run.wandb``), default callbacks,
    and the parsed config + environment in every logger (:class:`RunConfigCallback`)."""

    def __init__(
        self,
        model_class: type[LightningModule] | None = None,
        datamodule_class: type[LightningDataModule] | None = None,
        save_config_callback: type[SaveConfigCallback] | None = RunConfigCallback,
        **kwargs: Any,
    ) -> None:
        """Takes the arguments of :class:`LightningCLI`, config saving through :class:`RunConfigCallback`.

        Args:
            model_class: base class of the model.
            datamodule_class: base class of the datamodule.
            save_config_callback: the callback that saves the config (None: none is saved or logged).
            kwargs: the other arguments of :class:`LightningCLI`.
        """
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(model_class, datamodule_class, save_config_callback=save_config_callback, **kwargs)

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
