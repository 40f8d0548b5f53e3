"""CLIP / SigLIP image towers as frozen encoders (vssam2.encoders.clip), on tiny random-weight
folders written in transformers' real format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vssam2.encoders.clip import CLIPEncoder, check_clip_folder, clip_text_embeddings


def _write(folder: Path, kind: str) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, SiglipConfig, SiglipImageProcessor, SiglipModel

    from vssam2.masklets.sam3_model import tiny_clip_tokenizer

    text = {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    text |= {"num_attention_heads": 4, "max_position_embeddings": 64}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    vision |= {"image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    if kind == "clip":
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    tiny_clip_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip")
    return {kind: _write(root / kind, kind) for kind in ("clip", "siglip")}


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
