"""What a run records: the whole parsed config and the environment reach W&B (read back from the
offline run's transaction log) and the CSV logger's hparams.yaml, next to the modules' own
hyperparameters, for an evaluate.py refinement run and a train.py fit; the git commit is read
from ``.git`` without git; a module hyperparameter that would overwrite the record is refused."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from test_evaluate_cli import eval_args
from wandb_offline import read_offline_run

import vssam2
from datamodules import VSPWDataModule
from evaluate import main as evaluate_main
from train import main as train_main
from vssam2 import label_kernels
from vssam2.cli import RunConfigCallback, git_commit
from vssam2.masklets.compute import compute_cache
from vssam2.masklets.oracle import OracleSource

REPO = Path(__file__).resolve().parents[1]
REFINE_CONFIG = REPO / "configs" / "evaluate" / "refine_synthetic.yaml"
TRAIN_CONFIG = REPO / "configs" / "train" / "isam2_tiny_synthetic.yaml"


def wandb_run_config(run_dir: Path) -> dict[str, Any]:
    """The run config W&B would sync (the run record's, then every update in order)."""
    return read_offline_run(run_dir).config


def offline_run(root: Path) -> Path:
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def check_env(env: dict[str, Any]) -> None:
    assert set(env) == {
        "git_commit",
        "python",
        "vssam2",
        "torch",
        "sam2",
        "lightning",
        "numpy",
        "opencv",
        "device",
        "compiled_kernels",
    }
    assert env["vssam2"] == vssam2.__version__
    assert torch.__version__.split("+")[0] == env["torch"]
    assert env["sam2"] == importlib.metadata.version("sam2")
    assert env["device"] == "cpu"
    assert env["compiled_kernels"] is label_kernels.AVAILABLE  # on the CPU, what the kernels' switch says
    if (REPO / ".git").exists():
        assert isinstance(env["git_commit"], str) and len(env["git_commit"]) == 40
        int(env["git_commit"], 16)


def test_evaluate_refine_run_records_config_and_env(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shipped refinement config with non-default thresholds, so that defaults cannot pass.
    refine = yaml.safe_load(REFINE_CONFIG.read_text())
    (callback,) = refine["trainer"]["callbacks"]
    vote = {"class_path": "vssam2.fusion.MajorityVote", "init_args": {"min_area": 2, "min_share": 0.125}}
    gate = {"class_path": "vssam2.fusion.QualityGate", "init_args": {"min_margin": 0.25}}
    callback["init_args"]["rules"] = [vote, gate]
    config = tmp_path / "refine.yaml"
    config.write_text(yaml.safe_dump(refine))
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "runs"
    extra = ["--config", str(config), "--data.clip_len", "9", "--model.init_args.metrics.boundary_width", "3"]
    evaluate_main(eval_args(synthetic_root, out, "--run.wandb", "offline", "--data.max_videos", "1", *extra))

    run = out / "synthetic_refine"
    logged = wandb_run_config(offline_run(run))
    parsed = logged["config"]
    # The whole parsed config, exactly what config.yaml says (no linked arguments here).
    assert parsed == yaml.safe_load((run / "version_0" / "config.yaml").read_text())
    (refinement,) = [c for c in parsed["trainer"]["callbacks"] if c["class_path"] == "callbacks.TestTimeRefinement"]
    vote, gate = refinement["init_args"]["rules"]
    assert vote["class_path"] == "vssam2.fusion.MajorityVote"
    assert vote["init_args"]["min_area"] == 2 and vote["init_args"]["min_share"] == 0.125
    assert gate["class_path"] == "vssam2.fusion.QualityGate" and gate["init_args"]["min_margin"] == 0.25
    assert refinement["init_args"]["name_format"] == "oracle-{method}"
    assert refinement["init_args"]["source"]["class_path"] == "vssam2.masklets.oracle.OracleSource"
    assert refinement["init_args"]["source"]["init_args"]["connectivity"] == 8
    assert parsed["data"]["class_path"] == "datamodules.VSPWDataModule"
    assert parsed["data"]["init_args"]["clip_len"] == 9
    assert parsed["data"]["init_args"]["root"] == str(synthetic_root / "vspw")
    assert parsed["data"]["init_args"]["max_videos"] == 1
    assert parsed["model"]["class_path"] == "vssam2.replay.PredictionReplay"
    assert parsed["model"]["init_args"]["metrics"]["boundary_width"] == 3
    assert parsed["trainer"]["devices"] == 1
    assert parsed["trainer"]["strategy"] == "auto"
    assert parsed["trainer"]["default_root_dir"] == str(out)
    assert parsed["seed_everything"] == 0
    assert parsed["run"] == {"name": "synthetic_refine", "wandb": "offline", "wandb_project": "vssam2"}
    assert "ckpt_path" in parsed and parsed["ckpt_path"] is None
    check_env(logged["env"])
    # The modules' own hyperparameters stay where Lightning puts them, unchanged.
    assert logged["metrics"]["boundary_width"] == 3
    assert logged["clip_len"] == 9 and logged["root"] == str(synthetic_root / "vspw")
    # The CSV logger holds the same record.
    hparams = yaml.safe_load((run / "version_0" / "hparams.yaml").read_text())
    assert hparams["config"] == parsed and hparams["env"] == logged["env"]


def test_train_fit_records_optimizer_and_encoder(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=8, max_videos=1)
    for split in ("train", "val"):
        summary = compute_cache(OracleSource(), data, split, cache_root=tmp_path / "masklets", progress=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "runs"
    args = [
        "--config",
        str(TRAIN_CONFIG),
        "--data.root",
        str(synthetic_root / "vspw"),
        "--data.clip_len",
        "8",
        "--data.max_videos",
        "1",
        "--data.masklet_cache",
        str(summary.directory),
        "--data.feature_cache",
        "null",
        "--data.train_clip_len",
        "2",
        "--data.train_crop",
        "[32, 48]",
        "--data.batch_size",
        "1",
        "--data.pred_roots",
        json.dumps({"sim_strong": str(synthetic_root / "predictions" / "vspw" / "sim_strong")}),
        "--model.init_args.lr",
        "0.0125",
        "--model.init_args.encoder.init_args.level",
        "0",
        "--trainer.default_root_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--run.wandb",
        "offline",
        "--test",
        "false",
    ]
    train_main(args)

    run = out / "isam2_synthetic"
    logged = wandb_run_config(offline_run(run))
    parsed = logged["config"]
    assert parsed == yaml.safe_load((run / "version_0" / "config.yaml").read_text())
    model = parsed["model"]["init_args"]
    assert model["lr"] == 0.0125
    assert model["weight_decay"] == 0.0001 and model["warmup_epochs"] == 1
    assert model["encoder"]["class_path"] == "vssam2.encoders.SAM2Encoder"
    assert model["encoder"]["init_args"]["config"] == "vssam2-tiny-test"
    assert model["encoder"]["init_args"]["level"] == 0
    assert model["encoder"]["init_args"]["checkpoint"] is None and model["encoder"]["init_args"]["seed"] == 0
    assert parsed["data"]["init_args"]["masklet_cache"] == str(summary.directory)
    assert parsed["test"] is False and parsed["ckpt_path"] is None
    monitors = [c["init_args"].get("monitor") for c in parsed["trainer"]["callbacks"]]
    assert monitors[:2] == ["val/mIoU", "val/mIoU"]
    check_env(logged["env"])
    assert logged["lr"] == 0.0125  # the classifier's own hyperparameter, beside the record


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to build the repositories")
def test_git_commit_reads_every_layout_of_dot_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    assert git_commit(repo) is None  # not (yet) a checkout
    git(repo, "init", "-q", "-b", "main")
    assert git_commit(repo) is None  # a repository without commits
    (repo / "pkg" / "a.txt").write_text("a")
    env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    git(repo, "add", "pkg/a.txt")
    git(repo, *env, "commit", "-q", "-m", "first")
    first = git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == first  # loose ref
    assert git_commit(repo / "pkg") is None  # only the given root counts, never a parent
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert git_commit(repo) == first  # packed ref
    (repo / "pkg" / "a.txt").write_text("b")
    git(repo, *env, "commit", "-q", "-am", "second")
    second = git(repo, "rev-parse", "HEAD")
    assert second != first and git_commit(repo) == second
    git(repo, "checkout", "-q", "--detach", first)
    assert git_commit(repo) == first  # detached HEAD
    git(repo, "worktree", "add", "-q", str(tmp_path / "tree"), "main")
    assert (tmp_path / "tree" / ".git").is_file()
    assert git_commit(tmp_path / "tree") == second  # worktree: its branch lives in the main repository


def test_module_hyperparameter_named_like_the_record_is_refused() -> None:
    class Clash(LightningModule):
        def __init__(self, env: str = "lab") -> None:
            super().__init__()
            self.save_hyperparameters()

    callback = RunConfigCallback(parser=None, config=None)  # type: ignore[arg-type]  # never reached
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    with pytest.raises(ValueError, match=r"Clash saves the hyperparameter\(s\) \['env'\]"):
        callback.save_config(trainer, Clash(), "test")
