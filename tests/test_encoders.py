"""Frozen encoders: the shared interface, every checkpoint format they read, and their errors.

No weights are downloaded: the tests write random weights in the real file formats
(SAM2's ``{"model": sd}``, timm ``.safetensors`` / ``.pth`` / ``.bin``, mmseg-0.x MiT
segmentor checkpoints and NVlabs' ImageNet ``mit_b*.pth``). The MiT files are built from a
hand-written table of NVlabs parameter names and shapes, and the loaded encoder is compared
with NVlabs' forward pass written out with ``torch.nn.functional``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vssam2.encoders import FrozenEncoder, MiTEncoder, SAM2Encoder, TimmEncoder, mmseg_to_hf
from vssam2.encoders.base import checkpoint_sha256
from vssam2.encoders.mmseg_resize import cv2_linear_resize, mmseg_aligned_resize, mmseg_aligned_size
from vssam2.masklets.sam2_model import TINY_TEST_CONFIG, load_sam2
from vssam2.pooling import masked_average_pool

B, H, W = 2, 48, 64


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """A small batch of random RGB frames, ``(2, 48, 64, 3)`` uint8."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (B, H, W, 3), dtype=torch.uint8, generator=gen)


# kind -> (factory taking seed / level / checkpoint keywords, level used, expected (C, h, w) at 48x64)
KINDS: dict[str, tuple[Callable[..., FrozenEncoder], int, tuple[int, int, int]]] = {
    # SAM2 stretches every frame to image_size (128 for the tiny config): stride 16 -> 8x8.
    "sam2": (lambda **kw: SAM2Encoder(TINY_TEST_CONFIG, **kw), -1, (256, 8, 8)),
    "timm_resnet": (lambda **kw: TimmEncoder("test_resnet", **kw), -1, (96, 2, 2)),
    "timm_convnext": (lambda **kw: TimmEncoder("test_convnext", **kw), 1, (32, 6, 8)),
    "timm_efficientnet": (lambda **kw: TimmEncoder("test_efficientnet", **kw), 2, (32, 6, 8)),
    "mit_b0": (lambda **kw: MiTEncoder("b0", **kw), -1, (256, 2, 2)),
}


# -- the interface, for every kind ------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_interface(kind: str, frames: torch.Tensor) -> None:
    """Shape / dtype / out_channels, frozen, deterministic per seed, describe() a JSON cache key."""
    make, level, (c, h, w) = KINDS[kind]
    enc = make(level=level, seed=0)
    assert isinstance(enc, FrozenEncoder)
    assert enc.out_channels == c

    with torch.enable_grad():  # even where gradients are on, the encoder records none
        out = enc(frames)
    assert out.shape == (B, c, h, w) and out.dtype == torch.float32
    assert out.grad_fn is None and not out.requires_grad
    assert torch.isfinite(out).all() and out.std() > 0

    # Frozen: no parameter wants gradients, and .train() (what a parent LightningModule
    # calls every epoch) leaves every submodule in eval mode, so dropout, drop-path and
    # batch-norm statistics stay off and the output does not change.
    assert all(not p.requires_grad for p in enc.parameters())
    assert enc.train() is enc
    assert not any(m.training for m in enc.modules())
    torch.testing.assert_close(enc(frames), out, rtol=0, atol=0)

    # The features can train a head (no_grad, not inference_mode).
    head = torch.nn.Conv2d(c, 3, 1)
    head(out).square().mean().backward()
    assert head.weight.grad is not None

    # Same seed -> same weights and features; another seed -> others.
    torch.testing.assert_close(make(level=level, seed=0)(frames), out, rtol=0, atol=0)
    assert not torch.allclose(make(level=level, seed=1)(frames), out)

    desc = enc.describe()
    assert json.loads(json.dumps(desc)) == desc
    assert desc["class"] == type(enc).__name__ and desc["seed"] == 0
    assert desc == make(level=level, seed=0).describe()
    assert make(level=level, seed=1).describe() != desc
    other_level = 0 if desc["level"] != 0 else 1
    assert make(level=other_level, seed=0).describe() != desc


def test_building_does_not_touch_the_global_rng() -> None:
    """Seeded initialisation must not reset the stream a training run relies on."""
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    TimmEncoder("test_resnet", seed=5)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (lambda f: f.float(), ValueError),  # float frames
        (lambda f: f.float() / 255, ValueError),  # preprocessed already
        (lambda f: f[0], ValueError),  # (H, W, 3): no batch
        (lambda f: f.permute(0, 3, 1, 2).contiguous(), ValueError),  # channels first
        (lambda f: torch.cat([f, f[..., :1]], dim=-1), ValueError),  # RGBA
        (lambda f: f[:0], ValueError),  # empty batch
        (lambda f: f.numpy(), TypeError),  # not a tensor
    ],
)
def test_bad_frames(bad: Callable, error: type[Exception], frames: torch.Tensor) -> None:
    enc = TimmEncoder("test_resnet")
    with pytest.raises(error, match="frames"):
        enc(bad(frames))


@pytest.mark.parametrize(
    "make",
    [
        lambda: SAM2Encoder(TINY_TEST_CONFIG, level=3),
        lambda: TimmEncoder("test_resnet", level=5),
        lambda: MiTEncoder("b0", level=4),
        lambda: MiTEncoder("b0", level=-5),
    ],
)
def test_level_out_of_range(make: Callable[[], FrozenEncoder]) -> None:
    with pytest.raises(ValueError, match="level"):
        make()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="Unknown MiT variant"):
        MiTEncoder("b7")
    with pytest.raises(ValueError, match="no_such_model"):
        TimmEncoder("no_such_model")
    with pytest.raises(ValueError, match="input_size"):
        TimmEncoder("test_resnet", input_size=(48, 0))
    with pytest.raises(ValueError, match="input_size"):
        MiTEncoder("b0", input_size=(48,))


def test_sizes_and_normalisation(frames: torch.Tensor) -> None:
    """input_size resizes; fixed-size timm models get their size; mean/std are identity."""
    resized = TimmEncoder("test_resnet", input_size=(64, 96))
    assert resized(frames).shape == (B, 96, 2, 3)
    assert resized.describe()["input_size"] == [64, 96]
    # test_vit3 only accepts its configured 160x160 input.
    vit = TimmEncoder("test_vit3")
    assert vit.input_size == (160, 160) and vit(frames).shape == (B, 96, 10, 10)
    # mean / std default to the model's pretrained_cfg and are part of the identity.
    resnet = TimmEncoder("test_resnet")
    assert resnet.describe()["mean"] == [0.5, 0.5, 0.5]
    imagenet = TimmEncoder("test_resnet", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert imagenet.describe() != resnet.describe()
    assert not torch.allclose(imagenet(frames), resnet(frames))
    mit = MiTEncoder("b0", level=0, input_size=(96, 128))
    assert mit(frames).shape == (B, 32, 24, 32)


def test_frozen_encoders_from_yaml_class_path() -> None:
    """LightningCLI (jsonargparse) builds encoders from class_path + init_args."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--encoder", type=FrozenEncoder)
    specs = [
        ("vssam2.encoders.TimmEncoder", {"model_name": "test_resnet", "level": 2, "input_size": [48, 64]}),
        ("vssam2.encoders.MiTEncoder", {"variant": "mit_b0", "level": 2}),
        ("vssam2.encoders.MiTEncoder", {"variant": "b0", "resize": "mmseg_aligned", "img_scale": [80, 60]}),
        ("vssam2.encoders.SAM2Encoder", {"config": TINY_TEST_CONFIG, "overrides": []}),
    ]
    for class_path, init_args in specs:
        cfg = parser.parse_object({"encoder": {"class_path": class_path, "init_args": init_args}})
        encoder = parser.instantiate_classes(cfg).encoder
        assert type(encoder).__name__ == class_path.rsplit(".", 1)[1]
        if "img_scale" in init_args:
            assert encoder.resize == "mmseg_aligned" and encoder.img_scale == (80, 60)
    strict = ArgumentParser(exit_on_error=False)
    strict.add_argument("--encoder", type=FrozenEncoder)
    with pytest.raises(Exception, match="resize"):  # the Literal is checked while parsing
        strict.parse_object(
            {"encoder": {"class_path": "vssam2.encoders.MiTEncoder", "init_args": {"resize": "aligned"}}}
        )
    assert encoder.level == 2  # SAM2's default -1 is the last of its 3 levels


def test_checkpoint_sha256(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 3_000_000)  # several 1 MiB chunks
    assert checkpoint_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(b"b" * 3_000_000)
    os.utime(path, ns=(1, 1))  # a new mtime (and same size): the memo must not answer
    assert checkpoint_sha256(path) == hashlib.sha256(b"b" * 3_000_000).hexdigest()
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        checkpoint_sha256(tmp_path / "nope.bin")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast(frames: torch.Tensor) -> None:
    """CPU frames go to the encoder's device; bf16 autocast is close to float32; output float32."""
    for make, level, _ in KINDS.values():
        exact = make(level=level, autocast=False).cuda()
        fast = make(level=level, autocast=True).cuda()
        ref = exact(frames)
        out = fast(frames)
        assert out.device.type == "cuda" and out.dtype == torch.float32
        torch.testing.assert_close(exact(frames.cuda()), ref)
        cos = F.cosine_similarity(out.flatten(1), ref.flatten(1)).min()
        assert cos > 0.98, cos
        cpu = make(level=level, autocast=True)(frames)
        torch.testing.assert_close(ref.cpu(), cpu, rtol=1e-3, atol=1e-3)


# -- SAM2 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam2_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The tiny test model with seed-123 weights, in the official ``{"model": sd}`` format."""
    torch.manual_seed(123)
    state = {k: v.clone() for k, v in load_sam2(TINY_TEST_CONFIG, None).state_dict().items()}
    path = tmp_path_factory.mktemp("sam2") / "tiny.pt"
    torch.save({"model": state}, path)
    return path, state


def test_sam2_checkpoint(sam2_ckpt: tuple[Path, dict[str, torch.Tensor]], frames: torch.Tensor) -> None:
    path, state = sam2_ckpt
    enc = SAM2Encoder(TINY_TEST_CONFIG, checkpoint=str(path))
    # Only the image encoder is kept, and it holds the checkpoint's weights.
    own = enc.state_dict()
    assert set(own) == {k for k in state if k.startswith("image_encoder.")}
    for key, value in own.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)

    out = enc(frames)
    assert not torch.allclose(out, SAM2Encoder(TINY_TEST_CONFIG)(frames))
    torch.testing.assert_close(SAM2Encoder(TINY_TEST_CONFIG, checkpoint=str(path))(frames), out, rtol=0, atol=0)

    # Preprocessing and features are SAM2's own: SAM2Transforms, then image_encoder's
    # backbone_fpn[-1] (= vision_features).
    from sam2.utils.transforms import SAM2Transforms

    transforms = SAM2Transforms(resolution=128, mask_threshold=0.0)
    images = torch.stack([transforms(f.numpy()) for f in frames])  # (B, 3, 128, 128)
    torch.testing.assert_close(enc.preprocess(frames), images, rtol=0, atol=1e-5)
    model = load_sam2(TINY_TEST_CONFIG, path)
    with torch.no_grad():
        expected = model.image_encoder(images)["vision_features"]
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)

    desc = enc.describe()
    assert desc["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "seed" not in desc
    assert desc == SAM2Encoder(TINY_TEST_CONFIG, checkpoint=str(path), seed=9).describe()


def test_sam2_bad_checkpoints(sam2_ckpt: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    path, _ = sam2_ckpt
    wider = [
        "++model.image_encoder.trunk.embed_dim=32",
        "++model.image_encoder.neck.backbone_channel_list=[256,128,64,32]",
    ]
    with pytest.raises(ValueError, match=r"tiny\.pt.*does not match.*size mismatch"):
        SAM2Encoder(TINY_TEST_CONFIG, checkpoint=str(path), overrides=wider)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        SAM2Encoder(TINY_TEST_CONFIG, checkpoint=str(tmp_path / "absent.pt"))


# -- timm -------------------------------------------------------------------------------


def _timm_state(name: str, seed: int, **kwargs: int) -> dict[str, torch.Tensor]:
    """A full timm model's state dict (classifier included), as timm saves weights."""
    import timm

    torch.manual_seed(seed)
    return {k: v.clone() for k, v in timm.create_model(name, **kwargs).state_dict().items()}


@pytest.fixture(scope="module")
def timm_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, torch.Tensor]]:
    """The same test_resnet weights as .safetensors, a timm training checkpoint .pth, a bare .bin."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("timm")
    state = _timm_state("test_resnet", seed=7)
    files = {"safetensors": root / "w.safetensors", "pth": root / "checkpoint.pth", "bin": root / "pytorch_model.bin"}
    save_file(state, str(files["safetensors"]))
    # timm's train.py layout: weights under "state_dict" (here with DDP's "module." prefix),
    # beside the argparse Namespace and a numpy metric, which weights_only refuses by default.
    torch.save(
        {
            "epoch": 3,
            "arch": "test_resnet",
            "state_dict": {f"module.{k}": v for k, v in state.items()},
            "args": argparse.Namespace(model="test_resnet", lr=0.1),
            "metric": np.float64(71.5),
        },
        files["pth"],
    )
    torch.save(state, files["bin"])
    return files, state


def test_timm_weights(
    timm_files: tuple[dict[str, Path], dict[str, torch.Tensor]], frames: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import timm

    files, state = timm_files
    outs = {}
    for fmt, path in files.items():
        enc = TimmEncoder("test_resnet", weights=str(path), level=3)
        for key, value in enc.model.state_dict().items():  # pruned model: up to layer3
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)
        outs[fmt] = enc(frames)
        assert enc.describe()["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    torch.testing.assert_close(outs["pth"], outs["safetensors"], rtol=0, atol=0)
    torch.testing.assert_close(outs["bin"], outs["safetensors"], rtol=0, atol=0)
    assert not torch.allclose(outs["bin"], TimmEncoder("test_resnet", level=3)(frames))

    # The same features as timm's own features_only model loading the same local file:
    # pretrained_cfg_overlay "file" makes timm's load_pretrained read that file (no URL, no hub
    # id is consulted); HF_HUB_OFFLINE as a second guard for any hub call.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference = timm.create_model(
        "test_resnet",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(files["safetensors"])},
        features_only=True,
        out_indices=(3,),
    ).eval()
    images = (frames.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5  # test_resnet's mean/std
    with torch.no_grad():
        (expected,) = reference(images)
    torch.testing.assert_close(outs["safetensors"], expected, rtol=1e-5, atol=1e-5)


def test_timm_classifier_of_another_size_is_ignored(tmp_path: Path, frames: torch.Tensor) -> None:
    """Fine-tuned weights with a 10-class head load: the head is dropped anyway."""
    path = tmp_path / "ft.pth"
    state = _timm_state("test_resnet", seed=3, num_classes=10)
    assert state["fc.weight"].shape[0] == 10
    torch.save(state, path)
    TimmEncoder("test_resnet", weights=str(path))(frames)


@pytest.mark.parametrize(
    ("saved", "loaded", "expected"),
    [
        # Deeper model into a shallower one (like resnet101 weights into resnet50).
        ("resnet34", "resnet18", r"wrong\.safetensors.*'resnet18'.*96 unexpected: \['layer1\.2\."),
        (
            "test_convnext2",
            "test_convnext3",
            r"wrong\.safetensors.*3 shape mismatch: \['stages\.1\.blocks\.0\.conv_dw\.weight",
        ),
        ("test_resnet", "test_efficientnet", r"wrong\.safetensors.*\d+ missing: .*\(\+\d+ more\); \d+ unexpected"),
    ],
)
def test_timm_wrong_weights(saved: str, loaded: str, expected: str, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "wrong.safetensors"
    save_file(_timm_state(saved, seed=0), str(path))
    with pytest.raises(ValueError, match=expected):
        TimmEncoder(loaded, weights=str(path))


def test_timm_unreadable_weights(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        TimmEncoder("test_resnet", weights=str(tmp_path / "missing.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        TimmEncoder("test_resnet", weights=str(junk))
    module = tmp_path / "module.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, module)  # a pickled module, not weights
    with pytest.raises(ValueError, match=r"module\.pth.*Linear"):
        TimmEncoder("test_resnet", weights=str(module))


# -- MiT --------------------------------------------------------------------------------


def nvlabs_mit_shapes(hidden: tuple[int, ...], depths: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of NVlabs' ``MixVisionTransformer`` (mix_transformer.py).

    Written from NVlabs' source, independently of ``mmseg_to_hf``: OverlapPatchEmbed
    ``patch_embed{s}`` (7x7 conv for stage 1, 3x3 after), ``block{s}.{j}`` with norm1,
    Attention (q, kv of 2C outputs, proj; sr conv + norm when sr_ratio > 1), norm2, Mlp
    (fc1, DWConv, fc2; ratio 4), and the stage norms ``norm{s}``.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (c, depth, sr) in enumerate(zip(hidden, depths, (8, 4, 2, 1))):
        s, c_in, k = i + 1, (3 if i == 0 else hidden[i - 1]), (7 if i == 0 else 3)
        shapes[f"patch_embed{s}.proj.weight"] = (c, c_in, k, k)
        shapes[f"patch_embed{s}.proj.bias"] = (c,)
        shapes[f"patch_embed{s}.norm.weight"] = (c,)
        shapes[f"patch_embed{s}.norm.bias"] = (c,)
        for j in range(depth):
            b = f"block{s}.{j}."
            shapes[b + "norm1.weight"] = (c,)
            shapes[b + "norm1.bias"] = (c,)
            shapes[b + "attn.q.weight"] = (c, c)
            shapes[b + "attn.q.bias"] = (c,)
            shapes[b + "attn.kv.weight"] = (2 * c, c)
            shapes[b + "attn.kv.bias"] = (2 * c,)
            shapes[b + "attn.proj.weight"] = (c, c)
            shapes[b + "attn.proj.bias"] = (c,)
            if sr > 1:
                shapes[b + "attn.sr.weight"] = (c, c, sr, sr)
                shapes[b + "attn.sr.bias"] = (c,)
                shapes[b + "attn.norm.weight"] = (c,)
                shapes[b + "attn.norm.bias"] = (c,)
            shapes[b + "norm2.weight"] = (c,)
            shapes[b + "norm2.bias"] = (c,)
            shapes[b + "mlp.fc1.weight"] = (4 * c, c)
            shapes[b + "mlp.fc1.bias"] = (4 * c,)
            shapes[b + "mlp.dwconv.dwconv.weight"] = (4 * c, 1, 3, 3)
            shapes[b + "mlp.dwconv.dwconv.bias"] = (4 * c,)
            shapes[b + "mlp.fc2.weight"] = (c, 4 * c)
            shapes[b + "mlp.fc2.bias"] = (c,)
        shapes[f"norm{s}.weight"] = (c,)
        shapes[f"norm{s}.bias"] = (c,)
    return shapes


B0 = ((32, 64, 160, 256), (2, 2, 2, 2))
B1 = ((64, 128, 320, 512), (2, 2, 2, 2))


def random_mit_state(hidden: tuple[int, ...], depths: tuple[int, ...], seed: int) -> dict[str, torch.Tensor]:
    """Random NVlabs MiT weights (norm weights near 1, the rest small) without any prefix."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in nvlabs_mit_shapes(hidden, depths).items():
        value = 0.1 * torch.randn(shape, generator=gen)
        is_norm_weight = name.endswith("weight") and ("norm" in name.rsplit(".", 2)[-2])
        state[name] = 1 + value if is_norm_weight else value
    return state


@pytest.fixture(scope="module")
def mit_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, torch.Tensor]]:
    """The same MiT-B0 weights as a CFFM-style mmseg checkpoint and as NVlabs' ImageNet mit_b0.pth."""
    root = tmp_path_factory.mktemp("mit")
    backbone = random_mit_state(*B0, seed=11)
    segmentor = {f"backbone.{k}": v for k, v in backbone.items()}
    # Some of CFFM's decode head, which the encoder must ignore.
    segmentor["decode_head.conv_seg.weight"] = torch.randn(124, 256, 1, 1)
    segmentor["decode_head.conv_seg.bias"] = torch.randn(124)
    segmentor["decode_head.linear_c4.proj.weight"] = torch.randn(256, 256)
    meta = {
        "CLASSES": ("wall", "ceiling"),
        "PALETTE": [[1, 2, 3], [4, 5, 6]],
        "iter": 160000,
        "best_mIoU": np.float64(0.38),
    }
    files = {"mmseg": root / "cffm_b0.pth", "imagenet": root / "mit_b0.pth"}
    torch.save({"meta": meta, "state_dict": segmentor}, files["mmseg"])
    torch.save({**backbone, "head.weight": torch.randn(1000, 256), "head.bias": torch.randn(1000)}, files["imagenet"])
    return files, segmentor


def nvlabs_mit_forward(
    state: dict[str, torch.Tensor], frames: torch.Tensor, depths: tuple[int, ...]
) -> list[torch.Tensor]:
    """NVlabs' ``MixVisionTransformer.forward_features`` and mmseg's normalisation, in F.* ops.

    LayerNorm eps as in NVlabs: 1e-6 for block and stage norms (``norm_layer``), 1e-5
    (nn.LayerNorm's default) for the patch-embedding and sequence-reduction norms.
    """
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    x = (frames.permute(0, 3, 1, 2).float() - mean) / std
    outs = []
    for i, (heads, sr) in enumerate(zip((1, 2, 5, 8), (8, 4, 2, 1))):
        p, s = f"backbone.patch_embed{i + 1}.", i + 1
        x = F.conv2d(
            x, state[p + "proj.weight"], state[p + "proj.bias"], stride=4 if i == 0 else 2, padding=3 if i == 0 else 1
        )
        n, c, h, w = x.shape
        t = F.layer_norm(x.flatten(2).transpose(1, 2), (c,), state[p + "norm.weight"], state[p + "norm.bias"], eps=1e-5)
        for j in range(depths[i]):
            b = f"backbone.block{s}.{j}."
            y = F.layer_norm(t, (c,), state[b + "norm1.weight"], state[b + "norm1.bias"], eps=1e-6)
            q = (
                F.linear(y, state[b + "attn.q.weight"], state[b + "attn.q.bias"])
                .reshape(n, h * w, heads, c // heads)
                .permute(0, 2, 1, 3)
            )
            kv_in = y
            if sr > 1:
                r = F.conv2d(
                    y.permute(0, 2, 1).reshape(n, c, h, w),
                    state[b + "attn.sr.weight"],
                    state[b + "attn.sr.bias"],
                    stride=sr,
                )
                kv_in = F.layer_norm(
                    r.reshape(n, c, -1).permute(0, 2, 1),
                    (c,),
                    state[b + "attn.norm.weight"],
                    state[b + "attn.norm.bias"],
                    eps=1e-5,
                )
            kv = (
                F.linear(kv_in, state[b + "attn.kv.weight"], state[b + "attn.kv.bias"])
                .reshape(n, -1, 2, heads, c // heads)
                .permute(2, 0, 3, 1, 4)
            )
            attn = ((q @ kv[0].transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
            t = t + F.linear(
                (attn @ kv[1]).transpose(1, 2).reshape(n, h * w, c),
                state[b + "attn.proj.weight"],
                state[b + "attn.proj.bias"],
            )
            y = F.layer_norm(t, (c,), state[b + "norm2.weight"], state[b + "norm2.bias"], eps=1e-6)
            y = F.linear(y, state[b + "mlp.fc1.weight"], state[b + "mlp.fc1.bias"])
            y = F.conv2d(
                y.transpose(1, 2).reshape(n, 4 * c, h, w),
                state[b + "mlp.dwconv.dwconv.weight"],
                state[b + "mlp.dwconv.dwconv.bias"],
                padding=1,
                groups=4 * c,
            )
            y = F.gelu(y.flatten(2).transpose(1, 2))
            t = t + F.linear(y, state[b + "mlp.fc2.weight"], state[b + "mlp.fc2.bias"])
        t = F.layer_norm(t, (c,), state[f"backbone.norm{s}.weight"], state[f"backbone.norm{s}.bias"], eps=1e-6)
        x = t.reshape(n, h, w, c).permute(0, 3, 1, 2)
        outs.append(x)
    return outs


def test_mmseg_to_hf_names() -> None:
    """The key mapping on hand-picked keys of every kind, including the kv split."""
    kv_w, kv_b = torch.randn(128, 64), torch.randn(128)
    t = {name: torch.randn(2) for name in ("a", "b", "c", "d", "e", "f", "g", "h", "i")}
    mapped = mmseg_to_hf(
        {
            "backbone.patch_embed1.proj.weight": t["a"],
            "backbone.patch_embed3.norm.bias": t["b"],
            "backbone.block2.1.norm1.weight": t["c"],
            "backbone.block2.1.norm2.bias": t["d"],
            "backbone.block2.1.attn.kv.weight": kv_w,
            "backbone.block2.1.attn.kv.bias": kv_b,
            "backbone.block2.1.attn.q.weight": t["e"],
            "backbone.block2.1.attn.proj.bias": t["f"],
            "backbone.block1.0.attn.sr.weight": t["g"],
            "backbone.block1.0.attn.norm.weight": t["h"],
            "backbone.block4.0.mlp.dwconv.dwconv.weight": t["i"],
            "backbone.norm4.weight": t["a"],
            "backbone.cls_token": t["b"],  # not MiT: kept (reported as unexpected when loading)
            "decode_head.conv_seg.weight": t["c"],  # segmentation head: dropped
            "auxiliary_head.conv_seg.weight": t["c"],  # dropped
        }
    )
    assert mapped.keys() == {
        "stages.0.patch_embeddings.proj.weight",
        "stages.2.patch_embeddings.layer_norm.bias",
        "stages.1.blocks.1.layernorm_before.weight",
        "stages.1.blocks.1.layernorm_after.bias",
        "stages.1.blocks.1.attention.k_proj.weight",
        "stages.1.blocks.1.attention.v_proj.weight",
        "stages.1.blocks.1.attention.k_proj.bias",
        "stages.1.blocks.1.attention.v_proj.bias",
        "stages.1.blocks.1.attention.q_proj.weight",
        "stages.1.blocks.1.attention.o_proj.bias",
        "stages.0.blocks.0.attention.sequence_reduction.sequence_reduction.weight",
        "stages.0.blocks.0.attention.sequence_reduction.layer_norm.weight",
        "stages.3.blocks.0.mlp.dwconv.dwconv.weight",
        "stages.3.layer_norm.weight",
        "cls_token",
    }
    a = "stages.1.blocks.1.attention."
    assert torch.equal(mapped[a + "k_proj.weight"], kv_w[:64]) and torch.equal(mapped[a + "v_proj.weight"], kv_w[64:])
    assert torch.equal(mapped[a + "k_proj.bias"], kv_b[:64]) and torch.equal(mapped[a + "v_proj.bias"], kv_b[64:])
    assert mapped["stages.0.blocks.0.attention.sequence_reduction.layer_norm.weight"] is t["h"]
    # NVlabs' ImageNet files: no prefix, a classifier "head" to drop.
    plain = mmseg_to_hf({"block1.0.mlp.fc2.bias": t["a"], "head.weight": t["b"]})
    assert plain == {"stages.0.blocks.0.mlp.fc2.bias": t["a"]}


def test_mit_mmseg_checkpoint(mit_files: tuple[dict[str, Path], dict[str, torch.Tensor]], frames: torch.Tensor) -> None:
    files, sd = mit_files
    # At the frame's own size, to compare the weights' mapping with NVlabs' forward on the
    # same input (the segmentor's default resize is tested in test_mit_mmseg_aligned_*).
    enc = MiTEncoder("b0", checkpoint=str(files["mmseg"]), resize="keep")

    # Tensors landed where they belong.
    s0, s1, s3 = enc.stages[0], enc.stages[1], enc.stages[3]
    assert torch.equal(s0.patch_embeddings.layer_norm.weight, sd["backbone.patch_embed1.norm.weight"])
    assert torch.equal(s0.patch_embeddings.proj.weight, sd["backbone.patch_embed1.proj.weight"])
    kv_w, kv_b = sd["backbone.block2.1.attn.kv.weight"], sd["backbone.block2.1.attn.kv.bias"]
    attn = s1.blocks[1].attention
    assert torch.equal(attn.k_proj.weight, kv_w[:64]) and torch.equal(attn.v_proj.weight, kv_w[64:])
    assert torch.equal(attn.k_proj.bias, kv_b[:64]) and torch.equal(attn.v_proj.bias, kv_b[64:])
    assert torch.equal(attn.o_proj.weight, sd["backbone.block2.1.attn.proj.weight"])
    assert torch.equal(attn.sequence_reduction.sequence_reduction.weight, sd["backbone.block2.1.attn.sr.weight"])
    assert torch.equal(
        s0.blocks[0].attention.sequence_reduction.layer_norm.bias, sd["backbone.block1.0.attn.norm.bias"]
    )
    assert torch.equal(s3.blocks[1].mlp.dwconv.dwconv.weight, sd["backbone.block4.1.mlp.dwconv.dwconv.weight"])
    assert torch.equal(s3.layer_norm.weight, sd["backbone.norm4.weight"])
    assert not hasattr(s3.blocks[0].attention, "sequence_reduction")  # sr_ratio 1 in stage 4
    # NVlabs' LayerNorm eps, which transformers' SegFormer does not reproduce by itself.
    assert s0.layer_norm.eps == 1e-6 and s0.blocks[0].layernorm_before.eps == 1e-6
    assert s0.blocks[0].layernorm_after.eps == 1e-6
    assert s0.patch_embeddings.layer_norm.eps == 1e-5
    assert s0.blocks[0].attention.sequence_reduction.layer_norm.eps == 1e-5
    # Every parameter of the b0 table is used, and nothing else (kv's rows = k's + v's).
    n_nvlabs = sum(v.numel() for k, v in sd.items() if k.startswith("backbone."))
    assert sum(p.numel() for p in enc.parameters()) == n_nvlabs

    # The features are NVlabs' forward pass, stage 4 and stage 2.
    reference = nvlabs_mit_forward(sd, frames, B0[1])
    out = enc(frames)
    torch.testing.assert_close(out, reference[3], rtol=1e-4, atol=1e-4)
    stage2 = MiTEncoder("b0", checkpoint=str(files["mmseg"]), level=1, resize="keep")
    assert len(stage2.stages) == 2  # later stages are not kept
    torch.testing.assert_close(stage2(frames), reference[1], rtol=1e-4, atol=1e-4)

    assert not torch.allclose(out, MiTEncoder("b0")(frames), atol=1e-3)
    torch.testing.assert_close(
        MiTEncoder("mit_b0", checkpoint=str(files["mmseg"]), resize="keep")(frames), out, rtol=0, atol=0
    )
    desc = enc.describe()
    assert desc["checkpoint_sha256"] == hashlib.sha256(files["mmseg"].read_bytes()).hexdigest()
    assert "seed" not in desc and desc["level"] == 3

    # NVlabs' ImageNet file with the same backbone weights gives the same features (its
    # default keeps the frame's size).
    torch.testing.assert_close(MiTEncoder("b0", checkpoint=str(files["imagenet"]))(frames), out, rtol=0, atol=0)


def test_mit_wrong_checkpoints(tmp_path: Path) -> None:
    b1 = tmp_path / "cffm_b1.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in random_mit_state(*B1, seed=0).items()}}, b1)
    with pytest.raises(ValueError, match=r"cffm_b1\.pth does not match MiT-B0.*shape mismatch: .*It looks like MiT-B1"):
        MiTEncoder("b0", checkpoint=str(b1))

    other = tmp_path / "resnet.pth"
    torch.save({"state_dict": _timm_state("test_resnet", seed=0)}, other)
    with pytest.raises(ValueError, match=r"resnet\.pth.*missing: .*unexpected: \['conv1\..*no MiT backbone keys"):
        MiTEncoder("b0", checkpoint=str(other))

    head_only = tmp_path / "head_only.pth"
    torch.save({"state_dict": {"decode_head.conv_seg.weight": torch.zeros(124, 256, 1, 1)}}, head_only)
    with pytest.raises(ValueError, match=r"head_only\.pth.*\d+ missing"):
        MiTEncoder("b0", checkpoint=str(head_only))

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.pth"):
        MiTEncoder("b0", checkpoint=str(text))
    with pytest.raises(FileNotFoundError, match=r"gone\.pth"):
        MiTEncoder("b0", checkpoint=str(tmp_path / "gone.pth"))


# -- MiT preprocessing: mmseg's AlignedResize and mmcv's normalisation ------------------


def mmcv_aligned_resize_reference(
    img: np.ndarray, img_scale: tuple[int, int] = (853, 480), size_divisor: int = 32
) -> np.ndarray:
    """``AlignedResize_clips(keep_ratio=True, size_divisor)`` of one ``(H, W, 3)`` uint8 image.

    Written from GuoleiSun/VSS-CFFM's ``_resize_img`` / ``_align`` and mmcv 1.3's
    ``imrescale`` (``rescale_size``'s factor ``min(long / max(h, w), short / min(h, w))``,
    ``_scale_size``'s ``int(w * scale + 0.5)``) and ``imresize`` (``cv2.resize`` with
    ``INTER_LINEAR``), calling OpenCV itself.
    """
    h, w = img.shape[:2]
    factor = min(max(img_scale) / max(h, w), min(img_scale) / min(h, w))
    new_size = int(w * float(factor) + 0.5), int(h * float(factor) + 0.5)
    img = cv2.resize(img, new_size, interpolation=cv2.INTER_LINEAR)
    align_h = int(np.ceil(img.shape[0] / size_divisor)) * size_divisor
    align_w = int(np.ceil(img.shape[1] / size_divisor)) * size_divisor
    return cv2.resize(img, (align_w, align_h), interpolation=cv2.INTER_LINEAR)


def mmcv_imnormalize_reference(img: np.ndarray) -> np.ndarray:
    """mmcv 1.3's ``imnormalize`` with CFFM's ``img_norm_cfg`` (float32 mean / std), RGB in."""
    mean = np.array([123.675, 116.28, 103.53], dtype=np.float32)
    std = np.array([58.395, 57.12, 57.375], dtype=np.float32)
    img = img.copy().astype(np.float32)
    cv2.subtract(img, np.float64(mean.reshape(1, -1)), img)
    cv2.multiply(img, 1 / np.float64(std.reshape(1, -1)), img)
    return img


# Frame (H, W) -> the size the backbone sees under CFFM's test resize at (853, 480), worked
# out by hand from mmcv's rounding.
ALIGNED_SIZES: list[tuple[tuple[int, int], tuple[int, int]]] = [
    ((480, 853), (480, 864)),  # VSPW 480p: imrescale keeps it, _align widens 853 -> 864
    ((720, 1280), (480, 864)),  # factor 853/1280: 853.5 -> 853, 480.3 -> 480
    ((480, 1138), (384, 864)),  # factor 853/1138: 360.3 -> 360 -> 384, 853.5 -> 853 -> 864
    ((853, 480), (864, 480)),  # portrait
    ((1080, 1920), (480, 864)),  # factor 853/1920: 479.8 -> 480
    ((360, 640), (480, 864)),  # enlarged by 1.333
    ((481, 853), (480, 864)),  # factor 480/481: 851.2 -> 851 -> 864
    ((500, 500), (480, 480)),
    ((100, 100), (480, 480)),
    ((960, 1706), (480, 864)),  # exact halving: OpenCV's INTER_AREA fast path, then 853 -> 864
    ((30, 2000), (32, 864)),  # factor 853/2000: 12.8 -> 13 -> 32
]


@pytest.fixture(scope="module")
def aligned_mit() -> MiTEncoder:
    """A random MiT-B0 with CFFM's test resize, for preprocessing checks."""
    return MiTEncoder("b0", resize="mmseg_aligned")


@pytest.mark.parametrize(("frame_size", "expected"), ALIGNED_SIZES)
def test_mmseg_aligned_sizes(frame_size: tuple[int, int], expected: tuple[int, int], aligned_mit: MiTEncoder) -> None:
    assert mmseg_aligned_size(*frame_size)[1] == expected
    frame = np.zeros((*frame_size, 3), dtype=np.uint8)
    assert mmcv_aligned_resize_reference(frame).shape[:2] == expected
    images = aligned_mit.preprocess(torch.from_numpy(frame)[None])
    assert images.shape == (1, 3, *expected) and images.dtype == torch.float32


def test_cv2_linear_resize_matches_opencv() -> None:
    """Bit-exact against cv2.resize(INTER_LINEAR) on uint8: enlarging, shrinking, edge cases."""
    gen = np.random.default_rng(0)
    pairs = [
        ((480, 853), (480, 864)),
        ((720, 1280), (480, 853)),
        ((360, 853), (384, 864)),
        ((64, 96), (32, 48)),  # exact halving (INTER_AREA fast path)
        ((65, 96), (32, 48)),
        ((96, 96), (32, 32)),  # near halving, 3x: bilinear
        ((1, 1), (5, 7)),
        ((1, 9), (4, 1)),
        ((2, 2), (1, 1)),
        ((7, 9), (3, 4)),
        ((9, 7), (27, 21)),
    ]
    pairs += [(tuple(gen.integers(1, 120, 2)), tuple(gen.integers(1, 160, 2))) for _ in range(60)]
    for (h, w), (dh, dw) in pairs:
        img = gen.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)
        expected = cv2.resize(img, (int(dw), int(dh)), interpolation=cv2.INTER_LINEAR).reshape(int(dh), int(dw), 3)
        out = cv2_linear_resize(torch.from_numpy(img).permute(2, 0, 1), (int(dh), int(dw)))
        assert out.dtype == torch.uint8
        np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), expected, err_msg=f"{h}x{w} -> {dh}x{dw}")
    with pytest.raises(ValueError, match="uint8"):
        cv2_linear_resize(torch.zeros(3, 4, 4), (2, 2))


@pytest.mark.parametrize("frame_size", [(480, 853), (720, 1280), (480, 1138), (960, 1706), (360, 640)])
def test_mmseg_aligned_preprocess_matches_mmcv(frame_size: tuple[int, int], aligned_mit: MiTEncoder) -> None:
    """The resized uint8 image and the normalised input are mmcv's, to the bit."""
    gen = np.random.default_rng(frame_size[1])
    # Smooth content plus noise: both interpolation weights and rounding matter.
    ramp = np.linspace(0, 255, frame_size[1])[None, :, None] * np.ones((*frame_size, 3))
    frame = np.clip(ramp + gen.normal(0, 40, (*frame_size, 3)), 0, 255).astype(np.uint8)
    expected = mmcv_aligned_resize_reference(frame)
    chw = torch.from_numpy(frame).permute(2, 0, 1)[None]  # (1, 3, H, W)
    np.testing.assert_array_equal(mmseg_aligned_resize(chw)[0].permute(1, 2, 0).numpy(), expected)
    images = aligned_mit.preprocess(torch.from_numpy(frame)[None])  # (1, 3, h, w)
    np.testing.assert_array_equal(images[0].permute(1, 2, 0).numpy(), mmcv_imnormalize_reference(expected))


def test_mit_normalisation_is_mmcv_for_every_value() -> None:
    """All 256 values of each channel, at the frame's size and stretched."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    frame = np.stack([values, values.T, values[::-1]], axis=-1)  # (16, 16, 3)
    images = MiTEncoder("b0", resize="keep").preprocess(torch.from_numpy(frame)[None])
    np.testing.assert_array_equal(images[0].permute(1, 2, 0).numpy(), mmcv_imnormalize_reference(frame))
    # "stretch" is mmcv.imresize to input_size (mmseg's Resize with keep_ratio=False).
    stretched = MiTEncoder("b0", input_size=(24, 40)).preprocess(torch.from_numpy(frame)[None])
    expected = mmcv_imnormalize_reference(cv2.resize(frame, (40, 24), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(stretched[0].permute(1, 2, 0).numpy(), expected)


def test_mit_resize_follows_checkpoint_kind(
    mit_files: tuple[dict[str, Path], dict[str, torch.Tensor]], frames: torch.Tensor
) -> None:
    """An mmseg segmentor checkpoint resizes as its VSS model tested; others keep the size."""
    files, _ = mit_files
    segmentor = MiTEncoder("b0", checkpoint=str(files["mmseg"]))
    assert (segmentor.weights_kind, segmentor.resize) == ("mmseg_segmentor", "mmseg_aligned")
    assert (segmentor.img_scale, segmentor.size_divisor) == ((853, 480), 32)
    imagenet = MiTEncoder("b0", checkpoint=str(files["imagenet"]))
    assert (imagenet.weights_kind, imagenet.resize) == ("nvlabs_imagenet", "keep")
    random_init = MiTEncoder("b0")
    assert (random_init.weights_kind, random_init.resize) == ("random", "keep")
    assert MiTEncoder("b0", checkpoint=str(files["mmseg"]), input_size=(64, 64)).resize == "stretch"

    # 48x64 frames: factor min(853 / 64, 480 / 48) = 10 -> 480x640 (already aligned).
    assert segmentor.preprocess(frames).shape == (B, 3, 480, 640)
    assert imagenet.preprocess(frames).shape == (B, 3, H, W)
    # The mode is part of the identity: "auto" and its choice written out are the same
    # features, another mode or img_scale are not.
    desc = segmentor.describe()
    assert desc["resize"] == "mmseg_aligned" and desc["img_scale"] == [853, 480] and desc["size_divisor"] == 32
    assert MiTEncoder("b0", checkpoint=str(files["mmseg"]), resize="mmseg_aligned").describe() == desc
    kept = MiTEncoder("b0", checkpoint=str(files["mmseg"]), resize="keep").describe()
    assert kept != desc and kept["resize"] == "keep" and "img_scale" not in kept
    assert MiTEncoder("b0", checkpoint=str(files["mmseg"]), img_scale=(640, 360)).describe() != desc
    # The other kinds can ask for it.
    assert MiTEncoder("b0", checkpoint=str(files["imagenet"]), resize="mmseg_aligned").preprocess(frames).shape == (
        B,
        3,
        480,
        640,
    )


def test_mit_mmseg_aligned_features(
    mit_files: tuple[dict[str, Path], dict[str, torch.Tensor]], frames: torch.Tensor
) -> None:
    """Default features of a segmentor checkpoint = NVlabs' forward on mmcv's resized frame."""
    files, sd = mit_files
    # A small img_scale keeps the backbone cheap: 48x64 -> factor 1.25 -> 60x80 -> 64x96.
    enc = MiTEncoder("b0", checkpoint=str(files["mmseg"]), img_scale=(80, 60))
    resized = np.stack([mmcv_aligned_resize_reference(f.numpy(), (80, 60)) for f in frames])  # (B, 64, 96, 3)
    reference = nvlabs_mit_forward(sd, torch.from_numpy(resized), B0[1])
    out = enc(frames)
    assert out.shape == (B, 256, 2, 3)  # the frame's own size would give 2x2
    torch.testing.assert_close(out, reference[3], rtol=1e-4, atol=1e-4)

    # The feature grid is the resized frame's; pooling maps it onto the (H, W) segment map
    # by bilinear upsampling, uniform on each axis like the resize.
    segments = torch.zeros(B, H, W, dtype=torch.int64)
    segments[:, 5:20, 3:50] = 1
    segments[1, 30:33, 60:63] = 2
    pooled = masked_average_pool(out, segments, "bilinear")
    upsampled = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=False)  # (B, C, H, W)
    for row, masklet in enumerate(pooled.ids.tolist()):
        mask = (segments == masklet).unsqueeze(1)  # (B, 1, H, W)
        expected = (upsampled * mask).sum(dim=(0, 2, 3)) / mask.sum()
        torch.testing.assert_close(pooled.vectors[row], expected, rtol=1e-4, atol=1e-5)


def test_mit_resize_errors(mit_files: tuple[dict[str, Path], dict[str, torch.Tensor]]) -> None:
    files, _ = mit_files
    with pytest.raises(ValueError, match="Unknown MiT resize 'aligned'"):
        MiTEncoder("b0", resize="aligned")
    with pytest.raises(ValueError, match="'stretch' needs input_size"):
        MiTEncoder("b0", resize="stretch")
    with pytest.raises(ValueError, match=r"input_size \[64, 64\] is only used by resize='stretch'"):
        MiTEncoder("b0", checkpoint=str(files["mmseg"]), resize="mmseg_aligned", input_size=(64, 64))
    with pytest.raises(ValueError, match="img_scale / size_divisor.*'keep'"):
        MiTEncoder("b0", img_scale=(853, 480))
    with pytest.raises(ValueError, match="img_scale"):
        MiTEncoder("b0", resize="mmseg_aligned", img_scale=(853, 0))
    with pytest.raises(ValueError, match="size_divisor"):
        MiTEncoder("b0", resize="mmseg_aligned", size_divisor=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mit_aligned_preprocess_cuda(aligned_mit: MiTEncoder) -> None:
    """The resize and the normalisation table give the same bits on CUDA."""
    gen = torch.Generator().manual_seed(3)
    frames_cpu = torch.randint(0, 256, (2, 480, 1138, 3), dtype=torch.uint8, generator=gen)
    expected = aligned_mit.preprocess(frames_cpu)
    cuda = MiTEncoder("b0", resize="mmseg_aligned").cuda()
    torch.testing.assert_close(cuda.preprocess(frames_cpu.cuda()).cpu(), expected, rtol=0, atol=0)
    for size in [(480, 864), (240, 569), (23, 17)]:
        images = frames_cpu.permute(0, 3, 1, 2)
        torch.testing.assert_close(
            cv2_linear_resize(images.cuda(), size).cpu(), cv2_linear_resize(images, size), rtol=0, atol=0
        )
