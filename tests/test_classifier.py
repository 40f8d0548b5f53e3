"""Masklet classifiers end to end: feature cache (equals online, resumes), train.py fit + test of
the best checkpoint, cached validation = pixel-exact painting score, online training with
augmentation, resume from a checkpoint, wrong-encoder checkpoints, and 2-process DDP fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_command

from datamodules import VSPWDataModule
from train import main as train_main
from vssam2.classifier import MaskletClassifier
from vssam2.encoders import SAM2Encoder
from vssam2.features import compute_feature_cache, open_feature_cache
from vssam2.masklets.compute import compute_cache
from vssam2.masklets.oracle import OracleSource
from vssam2.refine import masklet_targets

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "train" / "isam2_tiny_synthetic.yaml"


def tiny_encoder(**kwargs) -> SAM2Encoder:
    return SAM2Encoder(config="vssam2-tiny-test", checkpoint=None, **kwargs)


@pytest.fixture(scope="module")
def caches(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Oracle masklets of train and val, and the tiny-SAM2 feature cache over them."""
    root = tmp_path_factory.mktemp("classifier_caches")
    data = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=8)
    for split in ("train", "val"):
        summary = compute_cache(OracleSource(), data, split, cache_root=root / "masklets", progress=False)
    masklets = summary.directory
    data = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=8, masklet_cache=str(masklets))
    for split in ("train", "val"):
        features = compute_feature_cache(tiny_encoder(), data, split, feature_root=root / "features", progress=False)
    return {"masklets": masklets, "features": features.directory, "root": root}


def train_args(data: Path, caches: dict[str, Path], out: Path, *extra: str, feature_cache: bool = True) -> list[str]:
    args = [
        "--config",
        str(CONFIG),
        "--data.root",
        str(data / "vspw"),
        "--data.clip_len",
        "8",
        "--data.masklet_cache",
        str(caches["masklets"]),
        "--data.pred_roots",
        json.dumps({"sim_strong": str(data / "predictions" / "vspw" / "sim_strong")}),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        "--run.wandb",
        "disabled",
        "--trainer.max_epochs",
        "3",
    ]
    if feature_cache:
        args += ["--data.feature_cache", str(caches["features"])]
    else:
        args += ["--data.feature_cache", "null", "--data.train_clip_len", "3", "--data.train_crop", "[32, 48]"]
    return args + list(extra)


def test_feature_cache_equals_online_vectors(synthetic_root: Path, caches: dict[str, Path]) -> None:
    cache = open_feature_cache(caches["features"])
    data = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=8, masklet_cache=str(caches["masklets"]))
    model = MaskletClassifier(encoder=tiny_encoder())
    rows = {}
    for chunk in data.eval_dataset("val"):
        clip = model.clip_masklets(chunk["frames"], chunk["segments"], chunk["gt"])
        rows.setdefault(chunk["video"], []).append((chunk["start"], clip))
    assert len(rows) == 3
    for video, clips in rows.items():
        stored = cache.read("val", video)
        vectors = torch.cat([clip.vectors for _, clip in clips])
        assert stored["vectors"].shape == tuple(vectors.shape)
        torch.testing.assert_close(
            torch.from_numpy(stored["vectors"]).float(), vectors, rtol=1e-3, atol=1e-3
        )  # float16
        assert stored["ids"].tolist() == torch.cat([clip.ids for _, clip in clips]).tolist()
        assert stored["start"].tolist() == [start for start, clip in clips for _ in range(clip.ids.shape[0])]
        targets = torch.cat([masklet_targets(clip.hist) for _, clip in clips])
        assert stored["target"].tolist() == targets.tolist()


def test_feature_cache_resumes_and_rejects_damage(synthetic_root: Path, caches: dict[str, Path]) -> None:
    cache = open_feature_cache(caches["features"])
    data = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=8, masklet_cache=str(caches["masklets"]))
    victim = sorted(cache.video_path("val", v).name for v in ["val_000_indoor"])[0]
    path = cache.directory / "val" / victim
    before = path.read_bytes()
    path.unlink()
    summary = compute_feature_cache(
        tiny_encoder(), data, "val", feature_root=caches["root"] / "features", progress=False
    )
    assert summary.computed == ["val_000_indoor"] and len(summary.skipped) == 2
    assert path.read_bytes() == before  # deterministic, and the same file as before
    # A damaged file is named in the error, never read as data.
    path.write_bytes(before[:100])
    with pytest.raises(Exception, match="val_000_indoor.npz"):
        cache.read("val", "val_000_indoor")
    path.write_bytes(before)
    # Another encoder configuration gets another folder.
    other = compute_feature_cache(
        tiny_encoder(level=0), data, "val", feature_root=caches["root"] / "features", progress=False, max_videos=1
    )
    assert other.directory != cache.directory


def test_train_fits_then_tests_best_checkpoint(synthetic_root: Path, caches: dict[str, Path], tmp_path: Path) -> None:
    cli = train_main(train_args(synthetic_root, caches, tmp_path))
    run = tmp_path / "isam2_synthetic" / "version_0"
    results = json.loads((run / "results.json").read_text())
    assert list(results["methods"]) == ["I-SAM2", "I-SAM2_base", "sim_strong"]
    callback = cli.trainer.checkpoint_callback
    assert Path(callback.best_model_path).is_file()
    # Testing ran on val with the best checkpoint: its cached-validation mIoU (computed from
    # masklet GT histograms) equals the mIoU of the painted maps scored by the benchmark core.
    assert float(callback.best_model_score) == pytest.approx(results["methods"]["I-SAM2"]["mIoU"] * 100, abs=1e-3)
    # The frozen encoder stays out of checkpoints.
    checkpoint = torch.load(callback.best_model_path, map_location="cpu", weights_only=False)
    assert not any(key.startswith("encoder.") for key in checkpoint["state_dict"])
    assert checkpoint["vssam2_encoder"]["class"] == "SAM2Encoder"
    # Oracle masklets cover every pixel: base fill changes nothing; learning beats chance by far.
    assert results["methods"]["I-SAM2"]["mIoU"] == results["methods"]["I-SAM2_base"]["mIoU"]
    assert (run / "results.md").read_text().count("I-SAM2") >= 2


def test_resume_continues_where_it_stopped(synthetic_root: Path, caches: dict[str, Path], tmp_path: Path) -> None:
    first = train_main(train_args(synthetic_root, caches, tmp_path, "--trainer.max_epochs", "1", "--test", "false"))
    steps_per_epoch = first.trainer.global_step
    last = Path(first.trainer.checkpoint_callback.last_model_path)
    assert last.is_file() and steps_per_epoch > 0
    second = train_main(
        train_args(
            synthetic_root, caches, tmp_path, "--trainer.max_epochs", "2", "--test", "false", "--ckpt_path", str(last)
        )
    )
    assert second.trainer.current_epoch == 2
    assert second.trainer.global_step == 2 * steps_per_epoch  # continued, did not restart


def test_checkpoint_of_another_encoder_is_refused(
    synthetic_root: Path, caches: dict[str, Path], tmp_path: Path
) -> None:
    cli = train_main(train_args(synthetic_root, caches, tmp_path, "--trainer.max_epochs", "1", "--test", "false"))
    path = cli.trainer.checkpoint_callback.last_model_path
    with pytest.raises(ValueError, match="another encoder"):
        MaskletClassifier.load_from_checkpoint(path, encoder=tiny_encoder(seed=1))
    model = MaskletClassifier.load_from_checkpoint(path, encoder=tiny_encoder())  # the same encoder loads
    assert torch.equal(model.head.layers[-1].weight, cli.model.head.layers[-1].weight.cpu())


def test_online_training_with_augmentation(synthetic_root: Path, caches: dict[str, Path], tmp_path: Path) -> None:
    cli = train_main(
        train_args(
            synthetic_root,
            caches,
            tmp_path,
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "3",
            "--data.batch_size",
            "1",
            "--test",
            "false",
            feature_cache=False,
        )
    )
    assert cli.trainer.global_step == 2
    logged = cli.trainer.logged_metrics
    assert torch.isfinite(logged["train/loss"]) and "val/mIoU" in logged


def test_train_clips_carry_segments_through_the_transform(synthetic_root: Path, caches: dict[str, Path]) -> None:
    data = VSPWDataModule(
        root=str(synthetic_root / "vspw"), masklet_cache=str(caches["masklets"]), train_clip_len=3, train_crop=(32, 48)
    )
    data.setup("fit")
    torch.manual_seed(0)
    item = data.train_dataset()[0]
    assert item["segments"].shape == item["gt"].shape == (3, 32, 48)
    # Oracle masklets are GT components: after the joint crop/flip each masklet still holds one GT class.
    for mid in item["segments"].unique().tolist():
        if mid:
            labels = item["gt"][item["segments"] == mid].unique()
            assert labels.numel() == 1


# slow: two Lightning processes (~35 s, most of it importing Lightning); kept out of the
# default run for its time budget, run by `make test-slow`
@pytest.mark.slow
def test_ddp_fit_two_processes(synthetic_root: Path, caches: dict[str, Path], tmp_path: Path) -> None:
    args = train_args(
        synthetic_root,
        caches,
        tmp_path,
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.max_epochs",
        "2",
    )
    run_command(str(REPO / "train.py"), *args, timeout=400)
    results = json.loads((tmp_path / "isam2_synthetic" / "version_0" / "results.json").read_text())
    assert results["videos"] == 3  # every val video scored exactly once across the two ranks
    assert results["methods"]["I-SAM2"]["mIoU"] > 0
    assert (tmp_path / "isam2_synthetic" / "version_0" / "confusion.png").is_file()


@pytest.mark.parametrize(
    "configs",
    [
        ["isam2_tiny_synthetic.yaml"],
        ["isam2_vspw.yaml"],
        ["isam2_vspw.yaml", "isam2_base_vspw.yaml"],
        ["icffm_b1_vspw.yaml"],
        ["isam2_vspw.yaml", "timm_vspw.yaml"],
        ["imit_b0_synthetic.yaml"],
    ],
)
def test_shipped_train_configs_parse(configs: list[str], capsys) -> None:
    args = [arg for name in configs for arg in ("--config", str(REPO / "configs" / "train" / name))]
    with pytest.raises(SystemExit) as exit_info:
        train_main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "MaskletClassifier" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name", ["isam2_tiny_synthetic.yaml", "isam2_vspw.yaml", "icffm_b1_vspw.yaml", "imit_b0_synthetic.yaml"]
)
def test_shipped_feature_configs_parse(name: str) -> None:
    from vssam2.features.__main__ import build_parser

    config = build_parser().parse_args(["--config", str(REPO / "configs" / "features" / name)])
    assert config.encoder.class_path.startswith("vssam2.encoders.") and config.splits == ["train", "val"]
