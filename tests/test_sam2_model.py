"""Tests for vssam2.masklets.sam2_model: config resolution, checkpoint loading, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vssam2.masklets.sam2_model import (
    CHECKPOINT_URLS,
    OFFICIAL_CONFIGS,
    TINY_TEST_CONFIG,
    backbone_feature_sizes,
    image_predictor,
    load_sam2,
    load_sam2_video_predictor,
    resolve_config,
)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random-init tiny test model saved in the official checkpoint format."""
    torch.manual_seed(0)
    model = load_sam2(TINY_TEST_CONFIG, None)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"model": state}, path)
    return path, state


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("sam2.1_hiera_t", "configs/sam2.1/sam2.1_hiera_t.yaml"),
        ("sam2.1-tiny", "configs/sam2.1/sam2.1_hiera_t.yaml"),
        ("sam2.1_hiera_tiny.pt", "configs/sam2.1/sam2.1_hiera_t.yaml"),
        ("facebook/sam2.1-hiera-base-plus", "configs/sam2.1/sam2.1_hiera_b+.yaml"),
        ("sam2.1-base+", "configs/sam2.1/sam2.1_hiera_b+.yaml"),
        ("sam2_hiera_l.yaml", "configs/sam2/sam2_hiera_l.yaml"),
        ("SAM2-Small", "configs/sam2/sam2_hiera_s.yaml"),
        ("configs/sam2/sam2_hiera_t.yaml", "configs/sam2/sam2_hiera_t.yaml"),
    ],
)
def test_alias_resolution(alias: str, expected: str) -> None:
    assert resolve_config(alias) == (expected, ())


def test_official_tables_are_complete() -> None:
    assert len(OFFICIAL_CONFIGS) == 8
    assert set(CHECKPOINT_URLS) == set(OFFICIAL_CONFIGS)
    for name, short in OFFICIAL_CONFIGS.items():
        assert resolve_config(short) == (name, ())
    name, overrides = resolve_config(TINY_TEST_CONFIG)
    assert name in OFFICIAL_CONFIGS and overrides


def test_unknown_config() -> None:
    with pytest.raises(ValueError, match="Unknown SAM2 config 'sam3-huge'"):
        resolve_config("sam3-huge")
    with pytest.raises(ValueError, match="not found in the sam2 package"):
        load_sam2("configs/nope.yaml", None)


def test_every_official_config_composes() -> None:
    """Each official config resolves in Hydra (no instantiation: large ones are slow)."""
    from hydra import compose

    for name in OFFICIAL_CONFIGS:
        cfg = compose(config_name=name, overrides=["++model.image_size=256"])
        assert cfg.model.image_size == 256


def test_checkpoint_roundtrip(tiny_ckpt: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, state = tiny_ckpt
    torch.manual_seed(1)  # a different random init, so equality proves the load
    model = load_sam2(TINY_TEST_CONFIG, str(path))
    assert not model.training
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert model.image_size == 128


def test_train_mode_and_image_size(tiny_ckpt: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, _ = tiny_ckpt
    model = load_sam2(TINY_TEST_CONFIG, path, image_size=96, mode="train")
    assert model.training and model.image_size == 96
    with pytest.raises(ValueError, match="multiple of 32"):
        load_sam2(TINY_TEST_CONFIG, None, image_size=100)
    with pytest.raises(ValueError, match="mode"):
        load_sam2(TINY_TEST_CONFIG, None, mode="test")


def test_missing_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "sam2.1_hiera_tiny.pt"
    with pytest.raises(FileNotFoundError) as info:
        load_sam2("sam2.1-tiny", path)
    assert str(path) in str(info.value)
    assert "dl.fbaipublicfiles.com/segment_anything_2" in str(info.value)


def test_not_a_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match="not a torch checkpoint") as info:
        load_sam2(TINY_TEST_CONFIG, path)
    assert str(path) in str(info.value)


def test_checkpoint_without_model_key(tmp_path: Path, tiny_ckpt: tuple[Path, dict[str, torch.Tensor]]) -> None:
    _, state = tiny_ckpt
    path = tmp_path / "bare.pt"
    torch.save(state, path)  # bare state dict, a common mistake
    with pytest.raises(ValueError, match="no 'model' key") as info:
        load_sam2(TINY_TEST_CONFIG, path)
    assert str(path) in str(info.value) and "bare state dict" in str(info.value)


def test_wrong_model_size(tmp_path: Path, tiny_ckpt: tuple[Path, dict[str, torch.Tensor]]) -> None:
    # The tiny test checkpoint into the real Hiera-T: shape mismatches and missing blocks.
    path, _ = tiny_ckpt
    with pytest.raises(ValueError) as info:
        load_sam2("sam2.1-tiny", path)
    msg = str(info.value)
    assert str(path) in msg and "configs/sam2.1/sam2.1_hiera_t.yaml" in msg
    assert "missing" in msg and "size mismatch" in msg and "image_encoder.trunk" in msg

    # A (random) Hiera-T checkpoint into the Hiera-S config: the hint names Hiera-T.
    tiny_real = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": load_sam2("sam2.1-tiny", None).state_dict()}, tiny_real)
    with pytest.raises(ValueError) as info:
        load_sam2("sam2.1_hiera_s", tiny_real)
    msg = str(info.value)
    assert str(tiny_real) in msg and "configs/sam2.1/sam2.1_hiera_s.yaml" in msg
    assert "missing" in msg and "image_encoder.trunk.blocks" in msg
    assert "probably belongs to config 'configs/sam2.1/sam2.1_hiera_t.yaml'" in msg

    # The same weights under the SAM 2 (not 2.1) tiny config: version mismatch.
    with pytest.raises(ValueError, match="unexpected") as info:
        load_sam2("sam2_hiera_t", tiny_real)
    assert "no_obj_embed_spatial" in str(info.value)


def test_image_predictor_with_overridden_size(
    tiny_ckpt: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, _ = tiny_ckpt
    model = load_sam2(TINY_TEST_CONFIG, path, image_size=160)
    assert backbone_feature_sizes(model) == [(40, 40), (20, 20), (10, 10)]
    predictor = image_predictor(model)
    image = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    predictor.set_image(image)
    masks, scores, low_res = predictor.predict(point_coords=np.array([[75.0, 50.0]]), point_labels=np.array([1]))
    assert masks.shape == (3, 100, 150)
    assert scores.shape == (3,)
    assert low_res.shape[0] == 3


def test_video_predictor_builds(tiny_ckpt: tuple[Path, dict[str, torch.Tensor]]) -> None:
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    path, state = tiny_ckpt
    predictor = load_sam2_video_predictor(TINY_TEST_CONFIG, path)
    assert isinstance(predictor, SAM2VideoPredictor)
    assert not predictor.training
    loaded = predictor.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_missing_cuda_extension_is_said_once_and_sam2_warning_silenced(capsys, monkeypatch):
    """Without sam2._C the user is told once what it means; sam2's own per-frame warning is gone."""
    import importlib.util
    import warnings

    from sam2.utils.misc import fill_holes_in_mask_scores

    from vssam2.masklets import sam2_model

    if importlib.util.find_spec("sam2._C") is not None:
        pytest.skip("sam2's CUDA extension is built here")
    monkeypatch.setattr(sam2_model, "_EXTENSION_NOTED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sam2_model._note_missing_cuda_extension()
        sam2_model._note_missing_cuda_extension()
        fill_holes_in_mask_scores(torch.zeros(1, 1, 8, 8), 4)
    assert capsys.readouterr().err.count("sam2's optional CUDA extension (sam2._C) is not built") == 1
    assert not [w for w in caught if "_C" in str(w.message)]
