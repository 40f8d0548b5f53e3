"""I-SAM2-LoRA: peft LoRA adapters on the SAM2 Hiera trunk's attention, trained online with the
MLP head. The adapters start as the identity and are the only trainable encoder parameters;
activation checkpointing gives the same gradients; a short train.py fit changes only adapters
and head; checkpoints hold only those and refuse another base encoder; resume; the feature
cache refuses an adapted encoder; a 2-process DDP fit (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_command

from datamodules import VSPWDataModule
from train import main as train_main
from vssam2.classifier import MaskletClassifier
from vssam2.encoders import SAM2Encoder, SAM2LoRAEncoder
from vssam2.features import compute_feature_cache
from vssam2.masklets.compute import compute_cache
from vssam2.masklets.oracle import OracleSource
from vssam2.pooling import masked_average_pool

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "train" / "isam2_lora_synthetic.yaml"


def lora_encoder(**kwargs) -> SAM2LoRAEncoder:
    return SAM2LoRAEncoder(config="vssam2-tiny-test", checkpoint=None, **kwargs)


def frames(seed: int = 0, count: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 48, 64, 3), dtype=torch.uint8, generator=generator)  # (T, H, W, 3)


@pytest.fixture(scope="module")
def masklets(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Oracle masklets of train and val."""
    root = tmp_path_factory.mktemp("lora_masklets")
    data = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=8)
    for split in ("train", "val"):
        summary = compute_cache(OracleSource(), data, split, cache_root=root, progress=False)
    return summary.directory


def train_args(data: Path, masklet_cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        "--data.root",
        str(data / "vspw"),
        "--data.clip_len",
        "8",
        "--data.masklet_cache",
        str(masklet_cache),
        "--data.pred_roots",
        json.dumps({"sim_strong": str(data / "predictions" / "vspw" / "sim_strong")}),
        "--data.train_clip_len",
        "3",
        "--data.train_crop",
        "[32, 48]",
        "--data.train_clips_per_epoch",
        "4",
        "--trainer.default_root_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        "--run.wandb",
        "disabled",
        "--trainer.max_epochs",
        "1",
        *extra,
    ]


def lora_names(encoder: torch.nn.Module) -> list[str]:
    return [name for name, p in encoder.named_parameters() if p.requires_grad]


def test_adapters_start_as_identity_and_are_the_only_trainable_parameters() -> None:
    base, adapted = SAM2Encoder(config="vssam2-tiny-test"), lora_encoder(rank=4)
    clip = frames()
    assert torch.equal(base(clip), adapted(clip))  # lora_B starts at zero
    names = lora_names(adapted)
    blocks = len(adapted.image_encoder.trunk.blocks)
    assert len(names) == blocks * 2 * 2  # every block x (qkv, proj) x (lora_A, lora_B)
    assert all(".attn." in n and (".lora_A." in n or ".lora_B." in n) for n in names)
    assert all(not p.requires_grad for n, p in adapted.named_parameters() if "lora_" not in n)
    # A chosen subset: only the last block's qkv.
    subset = lora_encoder(rank=2, targets=["qkv"], blocks=[-1])
    assert [n.split(".lora_")[0] for n in lora_names(subset)] == [
        f"image_encoder.trunk.blocks.{blocks - 1}.attn.qkv"
    ] * 2
    # The identity names the base encoder (what SAM2Encoder itself describes) and the adapters.
    assert subset.describe()["base"] == base.describe()
    assert subset.describe()["lora"] == {
        "rank": 2,
        "alpha": 16.0,
        "dropout": 0.0,
        "targets": ["qkv"],
        "blocks": [blocks - 1],
        "adapter_seed": 0,
    }
    # Train mode keeps SAM2 in eval mode (drop-path off); only the adapters' dropout follows it.
    adapted.train()
    assert not adapted.image_encoder.training
    assert all(m.training == ("lora_dropout" in n) for n, m in adapted.named_modules() if n)


def test_gradients_reach_only_the_adapters_and_checkpointing_is_exact() -> None:
    clip, segments = frames(1), torch.randint(0, 5, (3, 48, 64))
    grads = []
    for checkpointing in (False, True):
        encoder = lora_encoder(rank=4, adapter_seed=3, checkpointing=checkpointing)
        with torch.no_grad():  # make the adapters non-trivial so every path carries gradient
            for name, p in encoder.named_parameters():
                if ".lora_B." in name:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(7))
        encoder.train()
        vectors = masked_average_pool(encoder(clip), segments).vectors  # (N, 256)
        vectors.square().sum().backward()
        assert all(p.grad is None for n, p in encoder.named_parameters() if "lora_" not in n)
        grads.append({n: p.grad.clone() for n, p in encoder.named_parameters() if p.requires_grad})
        assert all(g.abs().sum() > 0 for g in grads[-1].values())
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7, msg=name)
    # Under no_grad (validation, testing) the encoder is plain inference.
    with torch.no_grad():
        assert encoder(clip).grad_fn is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rank": 0}, "rank"),
        ({"alpha": 0.0}, "alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"targets": ["mlp"]}, "targets"),
        ({"blocks": [99]}, "out of range"),
    ],
)
def test_bad_lora_arguments_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lora_encoder(**kwargs)


def test_feature_cache_refuses_an_adapted_encoder(synthetic_root: Path, masklets: Path, tmp_path: Path) -> None:
    data = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=8, masklet_cache=str(masklets))
    with pytest.raises(ValueError, match="feature cache cannot hold them"):
        compute_feature_cache(lora_encoder(), data, "val", feature_root=tmp_path, progress=False)
    model = MaskletClassifier(encoder=lora_encoder())
    batch = {"vectors": torch.zeros(2, 256), "target": torch.zeros(2, dtype=torch.int64), "area": torch.ones(2)}
    with pytest.raises(ValueError, match="train online on clips"):
        model.training_step(batch, 0)


def test_short_fit_changes_only_adapters_and_head(synthetic_root: Path, masklets: Path, tmp_path: Path) -> None:
    cli = train_main(train_args(synthetic_root, masklets, tmp_path, "--trainer.max_epochs", "2"))
    run = tmp_path / "isam2_lora_synthetic" / "version_0"
    results = json.loads((run / "results.json").read_text())
    assert list(results["methods"]) == ["I-SAM2-LoRA", "I-SAM2-LoRA_base", "sim_strong"]
    assert cli.trainer.global_step == 4  # 2 epochs x 4 clips / batch 2
    trained, fresh = cli.model.encoder.cpu(), lora_encoder(rank=4, alpha=8.0)
    fresh_state = fresh.state_dict()
    changed = {k for k, v in trained.state_dict().items() if not torch.equal(v, fresh_state[k])}
    assert changed and changed <= set(lora_names(trained))  # only adapters moved ...
    assert any(".lora_B." in k for k in changed)  # ... away from the identity
    # The checkpoint holds the head and the adapters, and the base encoder's identity.
    checkpoint = torch.load(cli.trainer.checkpoint_callback.last_model_path, map_location="cpu", weights_only=False)
    encoder_keys = {k.removeprefix("encoder.") for k in checkpoint["state_dict"] if k.startswith("encoder.")}
    assert encoder_keys == set(lora_names(trained))
    assert checkpoint["vssam2_encoder"]["base"] == SAM2Encoder(config="vssam2-tiny-test").describe()
    # The optimizer trains the adapters at encoder_lr.
    assert [g["initial_lr"] for g in checkpoint["optimizer_states"][0]["param_groups"]] == pytest.approx([0.003, 0.001])


def test_resume_and_refusal_of_another_base(synthetic_root: Path, masklets: Path, tmp_path: Path) -> None:
    first = train_main(train_args(synthetic_root, masklets, tmp_path, "--test", "false"))
    last = first.trainer.checkpoint_callback.last_model_path
    adapters = {k: v.detach().cpu().clone() for k, v in first.model.encoder.adapter_state_dict().items()}
    second = train_main(
        train_args(
            synthetic_root, masklets, tmp_path, "--trainer.max_epochs", "2", "--test", "false", "--ckpt_path", last
        )
    )
    assert second.trainer.current_epoch == 2 and second.trainer.global_step == 2 * first.trainer.global_step

    # Loading puts the saved adapters on the same base; another base or a plain SAM2 is refused.
    model = MaskletClassifier.load_from_checkpoint(last, encoder=lora_encoder(rank=4, alpha=8.0))
    for name, value in model.encoder.adapter_state_dict().items():
        assert torch.equal(value, adapters[name]), name
    with pytest.raises(ValueError, match="another base SAM2 encoder"):
        MaskletClassifier.load_from_checkpoint(last, encoder=lora_encoder(rank=4, alpha=8.0, seed=1))
    with pytest.raises(ValueError, match="another encoder configuration"):
        MaskletClassifier.load_from_checkpoint(last, encoder=lora_encoder(rank=2, alpha=8.0))
    with pytest.raises(ValueError, match="another encoder configuration"):
        MaskletClassifier.load_from_checkpoint(last, encoder=SAM2Encoder(config="vssam2-tiny-test"))


# slow: two Lightning processes (~40 s, most of it importing Lightning); run by `make test-slow`
@pytest.mark.slow
def test_ddp_fit_two_processes(synthetic_root: Path, masklets: Path, tmp_path: Path) -> None:
    args = train_args(
        synthetic_root,
        masklets,
        tmp_path,
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--data.batch_size",
        "1",
    )
    run_command(str(REPO / "train.py"), *args, timeout=400)
    run = tmp_path / "isam2_lora_synthetic" / "version_0"
    results = json.loads((run / "results.json").read_text())
    assert results["videos"] == 3  # every val video scored exactly once across the two ranks
    assert set(results["methods"]) == {"I-SAM2-LoRA", "I-SAM2-LoRA_base", "sim_strong"}
    # Both ranks trained the same adapters (DDP all-reduces their gradients): the saved ones moved.
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    lora_b = [v for k, v in checkpoint["state_dict"].items() if ".lora_B." in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)


@pytest.mark.parametrize("configs", [["isam2_lora_vspw.yaml"], ["isam2_lora_vspw.yaml", "isam2_base_vspw.yaml"]])
def test_shipped_lora_configs_parse(configs: list[str], capsys) -> None:
    args = [arg for name in configs for arg in ("--config", str(REPO / "configs" / "train" / name))]
    with pytest.raises(SystemExit) as exit_info:
        train_main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "SAM2LoRAEncoder" in printed and "feature_cache: null" in printed


# slow: the shipped VSPW config end to end with an official-format Hiera-T checkpoint at 128 px (~40 s)
@pytest.mark.slow
def test_shipped_vspw_config_trains_on_a_vspw_layout(synthetic_root: Path, masklets: Path, tmp_path: Path) -> None:
    from vssam2.masklets.sam2_model import load_sam2

    weights = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": load_sam2("sam2.1-tiny", None).state_dict()}, weights)  # Meta's format, random values
    encoder = "--model.init_args.encoder.init_args."
    args = [
        "--config",
        str(REPO / "configs" / "train" / "isam2_lora_vspw.yaml"),
        "--config",
        str(REPO / "configs" / "train" / "isam2_base_vspw.yaml"),
        f"{encoder}config",
        "sam2.1_hiera_tiny",
        f"{encoder}checkpoint",
        str(weights),
        f"{encoder}image_size",
        "128",
        "--data.root",
        str(synthetic_root / "vspw"),
        "--data.masklet_cache",
        str(masklets),
        "--data.pred_roots",
        json.dumps({"cffm_b1": str(synthetic_root / "predictions" / "vspw" / "sim_strong")}),
        "--data.num_workers",
        "0",
        "--data.train_clips_per_epoch",
        "2",
        "--data.batch_size",
        "1",
        "--data.train_clip_len",
        "2",
        "--trainer.max_epochs",
        "1",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.enable_progress_bar",
        "false",
        "--run.wandb",
        "disabled",
    ]
    train_main(args)
    run = tmp_path / "isam2_lora" / "version_0"
    results = json.loads((run / "results.json").read_text())
    assert list(results["methods"]) == ["I-SAM2-LoRA", "I-SAM2-LoRA_base", "cffm_b1"]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    base = checkpoint["vssam2_encoder"]["base"]
    assert base["config"].endswith("sam2.1_hiera_t.yaml") and len(base["checkpoint_sha256"]) == 64
    assert len(checkpoint["state_dict"]) < 200  # head + 12 blocks x 2 targets x 2 adapters, no SAM2 weights
