"""CLIP / SigLIP image towers as frozen encoders (vssam2.encoders.clip), on tiny random-weight
folders written in transformers' real format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vssam2.encoders.clip import CLIPEncoder, check_clip_folder, clip_text_embeddings, write_tiny_clip


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip")
    return {kind: write_tiny_clip(root / kind, kind) for kind in ("clip", "siglip")}


def _frames(n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 40, 56, 3), generator=g, dtype=torch.uint8)


def test_clip_patch_features_share_the_pooled_tokens_head(folders: dict[str, Path]) -> None:
    from transformers import CLIPModel

    encoder = CLIPEncoder(str(folders["clip"]))
    features = encoder(_frames())
    assert features.shape == (2, 24, 4, 4) and features.dtype == torch.float32 and features.grad_fn is None
    assert encoder.out_channels == 24 and not any(p.requires_grad for p in encoder.parameters())
    # The head applied to the patches is the one CLIP applies to its class token: through it,
    # the class token gives get_image_features, CLIP's own image embedding.
    model = CLIPModel.from_pretrained(folders["clip"], local_files_only=True).eval()
    images = encoder.preprocess(_frames())
    with torch.no_grad():
        hidden = encoder.vision_model(pixel_values=images).last_hidden_state
        pooled = encoder.projection(encoder.vision_model.post_layernorm(hidden[:, 0]))
        want = model.get_image_features(pixel_values=images)
        want = want if isinstance(want, torch.Tensor) else want.pooler_output
        patches = model.visual_projection(model.vision_model.post_layernorm(hidden[:, 1:]))
    torch.testing.assert_close(pooled, want)
    torch.testing.assert_close(features, patches.transpose(1, 2).reshape(2, 24, 4, 4))


def test_siglip_features_and_other_sizes(folders: dict[str, Path]) -> None:
    encoder = CLIPEncoder(str(folders["siglip"]))
    assert encoder(_frames(1)).shape == (1, 32, 4, 4)
    bigger = CLIPEncoder(str(folders["clip"]), image_size=48)  # position embeddings interpolated
    assert bigger(_frames(1)).shape == (1, 24, 6, 6)
    assert bigger.describe()["image_size"] == 48 and bigger.describe() != CLIPEncoder(str(folders["clip"])).describe()
    raw = CLIPEncoder(str(folders["clip"]), projected=False)
    assert raw(_frames(1)).shape == (1, 32, 4, 4)
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        CLIPEncoder(str(folders["clip"]), image_size=30)


def test_text_embeddings_are_unit_norm_template_ensembles(folders: dict[str, Path]) -> None:
    names = ["sky", "road", "person"]
    one = clip_text_embeddings(str(folders["clip"]), names, ["a photo of a {}."])
    two = clip_text_embeddings(str(folders["clip"]), names, ["{}", "a photo of a {}."])
    bare = clip_text_embeddings(str(folders["clip"]), names, ["{}"])
    assert one.shape == (3, 24)
    torch.testing.assert_close(one.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(two, F.normalize(bare + one, dim=-1))
    assert clip_text_embeddings(str(folders["siglip"]), names).shape == (3, 32)
    with pytest.raises(ValueError, match="exactly one"):
        clip_text_embeddings(str(folders["clip"]), names, ["a photo"])


def test_bad_folders_name_the_folder_and_the_problem(folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist.*nothing is downloaded"):
        CLIPEncoder(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty has no config.json"):
        check_clip_folder(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "sam3_video"}))
    with pytest.raises(ValueError, match=r"model_type 'sam3_video'"):
        check_clip_folder(other)
    (other / "config.json").write_text((folders["clip"] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"other has no weights"):
        check_clip_folder(other)
    (other / "model.safetensors").write_bytes((folders["clip"] / "model.safetensors").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"no image processor config"):
        check_clip_folder(other)


def test_zero_shot_picks_the_class_whose_text_embedding_is_planted(folders: dict[str, Path]) -> None:
    from vssam2.features.extract import encode_frames, extract_clip_masklets
    from vssam2.zero_shot import ZeroShotCLIP

    model = ZeroShotCLIP(CLIPEncoder(str(folders["clip"])), base_method="base")
    assert model.text.shape == (124, 24)
    torch.testing.assert_close(model.text.norm(dim=-1), torch.ones(124))
    frames = _frames(2)
    segments = torch.zeros(2, 40, 56, dtype=torch.int32)
    segments[:, :20, :30] = 1
    segments[:, 25:, 10:] = 2
    masklets = extract_clip_masklets(encode_frames(model.encoder, frames, 8, torch.device("cpu")), segments)
    planted = {1: 17, 2: 90}  # masklet id -> the class whose embedding is its own direction
    with torch.no_grad():
        for row, masklet in enumerate(masklets.ids.tolist()):
            model.text[planted[masklet]] = F.normalize(masklets.vectors[row], dim=-1)
    model.methods = ["I-CLIP", "I-CLIP_base", "base"]
    base = torch.full((2, 40, 56), 5, dtype=torch.uint8)
    out = model({"video": "v", "frames": frames, "segments": segments, "preds": {"base": base}})
    assert bool((out["I-CLIP"][segments == 1] == 17).all()) and bool((out["I-CLIP"][segments == 2] == 90).all())
    assert bool((out["I-CLIP"][segments == 0] == 255).all()) and bool((out["I-CLIP_base"][segments == 0] == 5).all())
    with pytest.raises(ValueError, match="3 class names for 124 classes"):
        ZeroShotCLIP(model.encoder, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="use projected=True"):
        ZeroShotCLIP(CLIPEncoder(str(folders["clip"]), projected=False))


@pytest.mark.parametrize(
    ("configs", "base", "extra"),
    [
        (("synthetic.yaml", "iclip_synthetic.yaml"), "sim_strong", []),
        # the shipped VSPW config alone on a VSPW-layout dataset: the tiny CLIP at its own size
        (
            ("iclip_vspw.yaml",),
            "CFFM-B0",
            ["--model.init_args.encoder.init_args.image_size", "32", "--data.num_workers", "0"],
        ),
    ],
)
def test_iclip_rows_through_evaluate(
    folders: dict[str, Path], synthetic_root: Path, tmp_path: Path, configs: tuple[str, str], base: str, extra: list
) -> None:
    import json as json_module

    from datamodules import VSPWDataModule
    from evaluate import main as evaluate_main
    from vssam2.masklets.compute import compute_cache
    from vssam2.masklets.superpixel import SuperpixelSource

    repo = Path(__file__).resolve().parents[1]
    data = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=8)
    source = SuperpixelSource(method="slic", n_segments=20, temporal=True)
    cache = compute_cache(source, data, "val", cache_root=tmp_path / "cache", progress=False).directory
    preds = synthetic_root / "predictions" / "vspw"
    cli = evaluate_main(
        [
            "test",
            *(arg for name in configs for arg in ("--config", str(repo / "configs" / "evaluate" / name))),
            "--model.init_args.encoder.init_args.checkpoint",
            str(folders["clip"]),
            "--data.root",
            str(synthetic_root / "vspw"),
            "--data.clip_len",
            "8",
            "--data.masklet_cache",
            str(cache),
            "--data.pred_roots",
            json_module.dumps({base: str(preds / "sim_strong")}),
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--trainer.enable_progress_bar",
            "false",
            "--run.wandb",
            "disabled",
            *extra,
        ]
    )
    rows = cli.model.report.rows
    assert list(rows) == ["I-CLIP", "I-CLIP_base", base]
    assert 0.0 <= float(rows["I-CLIP"]["mIoU"]) <= 1.0
