"""CLIP as a frozen encoder for the MLP head (I-CLIP-MLP) and the zero-shot masked-crop embedding.

Trained head: the shipped feature config over cached masklets with a tiny random-weight CLIP
equals the online pooled vectors; train.py fit + test from that cache gives the rows
I-CLIP-MLP, I-CLIP-MLP_base and the base model; a head trained on one CLIP (seed A) is refused
on another (seed B). Masked crops: the boxes, the crops, the planted-embedding choice, and a
full-frame crop's embedding against ``get_image_features`` of CLIP's own processor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from datamodules import VSPWDataModule
from train import main as train_main
from vssam2.classifier import MaskletClassifier
from vssam2.encoders.clip import CLIPEncoder, write_tiny_clip
from vssam2.features import open_feature_cache
from vssam2.features.__main__ import main as features_main
from vssam2.features.extract import encode_frames, extract_clip_masklets
from vssam2.masklets.compute import compute_cache
from vssam2.masklets.oracle import OracleSource
from vssam2.zero_shot import ZeroShotCLIP, masked_crop, masklet_crop_boxes

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "configs" / "train"
FEATURES = REPO / "configs" / "features"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny random-weight CLIP folders of the same shape: seed A (0) and seed B (1)."""
    root = tmp_path_factory.mktemp("iclip_clips")
    return {"A": write_tiny_clip(root / "a", seed=0), "B": write_tiny_clip(root / "b", seed=1)}


@pytest.fixture(scope="module")
def caches(synthetic_root: Path, clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Oracle masklets of train and val, and CLIP A's feature cache over them, built by the
    shipped feature config (configs/features/iclip_tiny_synthetic.yaml) through the CLI."""
    root = tmp_path_factory.mktemp("iclip_caches")
    data = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=8)
    for split in ("train", "val"):
        masklets = compute_cache(OracleSource(), data, split, cache_root=root / "masklets", progress=False).directory
    summaries = features_main(
        [
            "--config",
            str(FEATURES / "iclip_tiny_synthetic.yaml"),
            "--encoder.init_args.checkpoint",
            str(clips["A"]),
            "--data.init_args.root",
            str(synthetic_root / "vspw"),
            "--data.init_args.clip_len",
            "8",
            "--data.init_args.masklet_cache",
            str(masklets),
            "--feature_root",
            str(root / "features"),
            "--progress",
            "false",
        ]
    )
    assert [s.split for s in summaries] == ["train", "val"] and summaries[0].directory == summaries[1].directory
    return {"masklets": masklets, "features": summaries[0].directory, "root": root}


@pytest.fixture(scope="module")
def trained(
    synthetic_root: Path, clips: dict[str, Path], caches: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
):
    """train.py fit (3 epochs from the feature cache) + test of the shipped synthetic config."""
    out = tmp_path_factory.mktemp("iclip_run")
    cli = train_main(
        [
            "--config",
            str(TRAIN / "iclip_tiny_synthetic.yaml"),
            "--model.init_args.encoder.init_args.checkpoint",
            str(clips["A"]),
            "--data.root",
            str(synthetic_root / "vspw"),
            "--data.clip_len",
            "8",
            "--data.masklet_cache",
            str(caches["masklets"]),
            "--data.feature_cache",
            str(caches["features"]),
            "--data.pred_roots",
            json.dumps({"sim_strong": str(synthetic_root / "predictions" / "vspw" / "sim_strong")}),
            "--trainer.default_root_dir",
            str(out),
            "--trainer.enable_progress_bar",
            "false",
            "--run.wandb",
            "disabled",
            "--trainer.max_epochs",
            "3",
        ]
    )
    return cli, out / "iclip_synthetic" / "version_0"


def _frames(n: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    """(n, H, W, 3) uint8 smooth random frames (a bicubic resize of them is not all clipping)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g)
    return (F.interpolate(coarse, size=(height, width), mode="bilinear") * 255).round().byte().permute(0, 2, 3, 1)


# -- the trained head ------------------------------------------------------------------------


def test_clip_feature_cache_equals_online_vectors(
    synthetic_root: Path, clips: dict[str, Path], caches: dict[str, Path]
) -> None:
    cache = open_feature_cache(caches["features"])
    encoder = CLIPEncoder(str(clips["A"]))
    assert cache.directory.name.startswith("clipencoder-") and cache.config["encoder"] == encoder.describe()
    data = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=8, masklet_cache=str(caches["masklets"]))
    model = MaskletClassifier(encoder=encoder, name="I-CLIP-MLP")
    online: dict[str, list] = {}
    for chunk in data.eval_dataset("val"):
        online.setdefault(chunk["video"], []).append(model.clip_masklets(chunk["frames"], chunk["segments"], None))
    assert len(online) == 3
    for video, chunks in online.items():
        stored = cache.read("val", video)
        vectors = torch.cat([clip.vectors for clip in chunks])  # (N, 24)
        assert stored["vectors"].shape == tuple(vectors.shape) and vectors.shape[1] == 24
        torch.testing.assert_close(torch.from_numpy(stored["vectors"]).float(), vectors, rtol=1e-3, atol=1e-3)
        assert stored["ids"].tolist() == torch.cat([clip.ids for clip in chunks]).tolist()
    # Another CLIP (other weights, same shapes) keys another folder, never these vectors.
    other = CLIPEncoder(str(clips["B"]))
    assert other.describe()["checkpoint_sha256"] != encoder.describe()["checkpoint_sha256"]


def test_train_fits_then_tests_the_clip_head(trained) -> None:
    cli, run = trained
    results = json.loads((run / "results.json").read_text())
    assert list(results["methods"]) == ["I-CLIP-MLP", "I-CLIP-MLP_base", "sim_strong"]
    assert 0.0 < results["methods"]["I-CLIP-MLP"]["mIoU"] <= 1.0
    callback = cli.trainer.checkpoint_callback
    # Tested with the best checkpoint: its cached-validation mIoU is the painted maps' mIoU.
    assert float(callback.best_model_score) == pytest.approx(results["methods"]["I-CLIP-MLP"]["mIoU"] * 100, abs=1e-3)
    checkpoint = torch.load(callback.best_model_path, map_location="cpu", weights_only=False)
    assert not any(key.startswith("encoder.") for key in checkpoint["state_dict"])  # the tower stays out
    assert checkpoint["vssam2_encoder"] == cli.model.encoder.describe()
    assert checkpoint["vssam2_encoder"]["class"] == "CLIPEncoder" and checkpoint["vssam2_feature_dim"] == 24


def test_head_trained_on_one_clip_is_refused_on_another(trained, clips: dict[str, Path]) -> None:
    cli, _ = trained
    path = cli.trainer.checkpoint_callback.last_model_path
    with pytest.raises(ValueError, match=r"another encoder configuration(.|\n)*checkpoint_sha256"):
        MaskletClassifier.load_from_checkpoint(path, encoder=CLIPEncoder(str(clips["B"])))
    with pytest.raises(ValueError, match="head takes 24-d vectors, this model's encoder gives 32-d"):
        MaskletClassifier.load_from_checkpoint(path, encoder=CLIPEncoder(str(clips["A"]), projected=False))
    model = MaskletClassifier.load_from_checkpoint(path, encoder=CLIPEncoder(str(clips["A"])))  # the same CLIP loads
    assert torch.equal(model.head.layers[-1].weight, cli.model.head.layers[-1].weight.cpu())


@pytest.mark.parametrize(
    "configs", [["iclip_tiny_synthetic.yaml"], ["iclip_vspw.yaml"], ["iclip_vspw.yaml", "isam2_base_vspw.yaml"]]
)
def test_shipped_iclip_train_configs_parse(configs: list[str], capsys) -> None:
    args = [arg for name in configs for arg in ("--config", str(TRAIN / name))]
    with pytest.raises(SystemExit) as exit_info:
        train_main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "vssam2.encoders.CLIPEncoder" in printed and "name: I-CLIP-MLP" in printed
    assert "clipencoder-*" in printed and ("base_method: cffm_b1" in printed) == (len(configs) == 2)


@pytest.mark.parametrize("name", ["iclip_tiny_synthetic.yaml", "iclip_vspw.yaml"])
def test_shipped_iclip_feature_configs_parse(name: str) -> None:
    from vssam2.features.__main__ import build_parser

    config = build_parser().parse_args(["--config", str(FEATURES / name)])
    assert config.encoder.class_path == "vssam2.encoders.CLIPEncoder" and config.splits == ["train", "val"]
    assert config.data.init_args.masklet_cache


# -- masked crops (zero-shot) ----------------------------------------------------------------


def test_crop_boxes_and_crops() -> None:
    segments = torch.zeros(3, 10, 20, dtype=torch.int32)
    segments[0, 2:4, 3:9] = 5  # 12 pixels
    segments[1, 1:5, 2:10] = 5  # 32 pixels: the largest, a 4 x 8 box at (1, 2)
    segments[2] = 7  # the whole frame but one pixel
    segments[2, 0, 0] = 0
    boxes = masklet_crop_boxes(segments, margin=0.25)
    assert boxes.ids.tolist() == [5, 7] and boxes.frame.tolist() == [1, 2]
    # Squares of the longer side plus 25 % of it each side, centred on the box: 8 -> 12, 20 -> 30.
    assert boxes.side.tolist() == [12, 30] and boxes.top.tolist() == [-3, -10] and boxes.left.tolist() == [0, -5]
    assert masklet_crop_boxes(segments, margin=0.1).side.tolist() == [10, 24]  # ceil(8 * 1.2) = 10, 20 * 1.2 = 24
    assert boxes.rows[segments == 0].eq(-1).all() and boxes.rows[segments == 7].eq(1).all()
    frames = _frames(3, 10, 20)
    fill = torch.tensor([1, 2, 3], dtype=torch.uint8)
    crop = masked_crop(frames, segments, 5, 1, -3, 0, 12, fill)  # (3, 12, 12)
    inside = torch.zeros(12, 12, dtype=torch.bool)
    inside[4:8, 2:10] = True  # the masklet's 4 x 8 pixels, centred
    assert torch.equal(crop.permute(1, 2, 0)[inside], frames[1, 1:5, 2:10].reshape(-1, 3))
    assert bool((crop.permute(1, 2, 0)[~inside] == fill).all())  # rows above the frame, other pixels: fill
    with pytest.raises(ValueError, match="margin must be >= 0"):
        masklet_crop_boxes(segments, margin=-0.1)


def test_crop_embedding_of_a_full_frame_masklet_is_clips_image_embedding(clips: dict[str, Path]) -> None:
    """With no margin, a masklet covering a square frame crops the frame itself, so its
    embedding is get_image_features of the frame through CLIP's own processor (torchvision
    bicubic antialiased resize of the uint8 image, centre crop, rescale, normalise). On a
    non-square frame the crop is the frame padded to a square with the mean colour instead of
    the processor's centre crop, which would cut the masklet."""
    from transformers import CLIPImageProcessor, CLIPModel

    model = ZeroShotCLIP(CLIPEncoder(str(clips["A"]), image_size=48), embedding="crop", crop_margin=0.0)
    assert model.encoder.crop_size == 32  # the tower's own size, not the dense features' 48
    frames = _frames(2, 72, 72)
    segments = torch.ones(2, 72, 72, dtype=torch.int32)
    segments[1, :, :30] = 0  # frame 0 is the masklet's largest
    vectors, rows = model.crop_vectors(frames, segments)
    processor = CLIPImageProcessor.from_pretrained(clips["A"], local_files_only=True)
    clip = CLIPModel.from_pretrained(clips["A"], local_files_only=True).eval()
    with torch.no_grad():
        want = clip.get_image_features(**processor(images=frames[0], return_tensors="pt"))
    want = want if isinstance(want, torch.Tensor) else want.pooler_output
    assert vectors.shape == (1, 24) and rows.unique().tolist() == [-1, 0]
    torch.testing.assert_close(vectors, want)


def test_crop_mode_picks_the_class_whose_text_embedding_is_planted(clips: dict[str, Path]) -> None:
    model = ZeroShotCLIP(CLIPEncoder(str(clips["A"])), base_method="base", embedding="crop")
    frames = _frames(2, 40, 56)
    segments = torch.zeros(2, 40, 56, dtype=torch.int32)
    segments[:, :20, :30] = 1
    segments[:, 25:, 10:] = 2
    segments[1, 25:, 40:] = 0  # masklet 2 is largest in frame 0
    vectors, _ = model.crop_vectors(frames, segments)
    dense = extract_clip_masklets(encode_frames(model.encoder, frames, 8, torch.device("cpu")), segments).vectors
    assert vectors.shape == dense.shape == (2, 24) and not torch.allclose(vectors, dense)  # another embedding
    planted = {1: 17, 2: 90}  # masklet id -> the class whose embedding is its crop's direction
    with torch.no_grad():
        for row, masklet in enumerate((1, 2)):
            model.text[planted[masklet]] = F.normalize(vectors[row], dim=-1)
    model.methods = ["I-CLIP", "I-CLIP_base", "base"]
    base = torch.full((2, 40, 56), 5, dtype=torch.uint8)
    out = model({"video": "v", "frames": frames, "segments": segments, "preds": {"base": base}})
    assert bool((out["I-CLIP"][segments == 1] == 17).all()) and bool((out["I-CLIP"][segments == 2] == 90).all())
    assert bool((out["I-CLIP"][segments == 0] == 255).all()) and bool((out["I-CLIP_base"][segments == 0] == 5).all())
    with pytest.raises(ValueError, match=r"embedding must be one of \('dense', 'crop'\)"):
        ZeroShotCLIP(model.encoder, embedding="patches")
    with pytest.raises(ValueError, match="crops must be square"):
        model.encoder.preprocess_crops([torch.zeros(3, 4, 5, dtype=torch.uint8)])


def test_write_tiny_clip_takes_another_vision_shape(tmp_path: Path) -> None:
    """benchmarks/bench_clip.py writes a ViT-B/16-shaped tower this way; the processor follows."""
    from transformers import CLIPImageProcessor

    folder = write_tiny_clip(tmp_path / "c", vision={"image_size": 48, "patch_size": 16}, projection_dim=16)
    encoder = CLIPEncoder(str(folder))
    assert (encoder.native_size, encoder.patch_size, encoder.crop_size, encoder.out_channels) == (48, 16, 48, 16)
    assert CLIPImageProcessor.from_pretrained(folder, local_files_only=True).crop_size == {"height": 48, "width": 48}
    assert encoder(_frames(1, 30, 40)).shape == (1, 16, 3, 3)
