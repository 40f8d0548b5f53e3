"""I-SAM2 in one pass (vssam2.features.one_pass): the masklet pass of a SAM2 source writes the
feature cache that the two-pass route (compute_cache, then compute_feature_cache with the
equivalent SAM2Encoder) writes — same folder, bit-identical files — resumes after kills,
is skipped by the second pass, and refuses what it cannot serve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import VSPWDataModule
from vssam2.encoders import SAM2Encoder
from vssam2.features import compute_feature_cache, open_feature_cache
from vssam2.features.one_pass import OnePassFeatures, OnePassFeatureWriter
from vssam2.masklets.cache import MaskletCache, cache_config, open_cache
from vssam2.masklets.compute import compute_cache
from vssam2.masklets.oracle import OracleSource
from vssam2.masklets.proposals import ProposalParams
from vssam2.masklets.random_weights import keep_objects
from vssam2.masklets.sam2_model import TINY_TEST_CONFIG
from vssam2.masklets.sam2_video import SAM2VideoSource
from vssam2.synthetic import SyntheticConfig, write_synthetic

REPO = Path(__file__).resolve().parents[1]
# Short videos (6-7 frames, 32x48): every masklet pass here costs a SAM2 run per frame.
SMALL = SyntheticConfig(
    height=32, width=48, min_frames=6, max_frames=7, videos={"train": 2, "val": 1, "test": 1}, seed=3
)
# The proposal thresholds of configs/masklets/sam2_tiny_one_pass_synthetic.yaml, on a 4x4 grid.
PARAMS = ProposalParams(
    points_per_side=4,
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    stability_score_offset=0.9,
    box_nms_thresh=0.7,
)
MASKLET_CLIP = 4  # frames per chunk of the masklet pass
FEATURE_CLIP = 3  # frames per pooled chunk: feature chunks straddle masklet chunks


class Killed(Exception):
    """Stands for the process being killed at a chosen point."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # many small ops (conftest.one_thread)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("one_pass_data")
    write_synthetic(root, SMALL)
    return root / "vspw"


@pytest.fixture(scope="module")
def source() -> SAM2VideoSource:
    """Windows of 3 frames (proposals, propagation, stitching), at most 2 objects, objects kept."""
    source = SAM2VideoSource(TINY_TEST_CONFIG, None, window=3, proposer="fast", proposal=PARAMS, max_objects=2)
    keep_objects(source.predictor, 10.0)
    return source


def masklet_data(data_root: Path) -> VSPWDataModule:
    return VSPWDataModule(root=str(data_root), clip_len=MASKLET_CLIP)


def feature_data(data_root: Path, masklets: Path, clip_len: int = FEATURE_CLIP) -> VSPWDataModule:
    return VSPWDataModule(root=str(data_root), clip_len=clip_len, masklet_cache=str(masklets))


def tiny_encoder(**kwargs) -> SAM2Encoder:
    """The encoder equivalent to the source: same config, random weights of seed 0."""
    return SAM2Encoder(TINY_TEST_CONFIG, None, level=-1, **kwargs)


@pytest.fixture(scope="module")
def one_pass(data_root: Path, source: SAM2VideoSource, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("one_pass")
    features = OnePassFeatures(clip_len=FEATURE_CLIP, feature_root=str(root / "features"))
    summary = compute_cache(
        source, masklet_data(data_root), "train", cache_root=root / "masklets", progress=False, features=features
    )
    return summary


@pytest.fixture(scope="module")
def two_pass(data_root: Path, source: SAM2VideoSource, tmp_path_factory: pytest.TempPathFactory):
    """The two-pass route: the masklets alone, then the equivalent SAM2Encoder over them (default
    encoder batch size); returns both summaries."""
    root = tmp_path_factory.mktemp("two_pass")
    masklets = compute_cache(source, masklet_data(data_root), "train", cache_root=root / "masklets", progress=False)
    data = feature_data(data_root, masklets.directory)
    features = compute_feature_cache(tiny_encoder(), data, "train", feature_root=root / "features", progress=False)
    return masklets, features


def assert_same_files(first: Path, second: Path, videos: list[str], split: str = "train") -> None:
    """Both folders have the same key and, for every video, identical arrays (float16 vectors included)."""
    a, b = open_feature_cache(first), open_feature_cache(second)
    assert first.name == second.name and a.config == b.config
    for video in videos:
        left, right = a.read(split, video), b.read(split, video)
        assert sorted(left) == sorted(right)
        for name in left:
            assert left[name].dtype == right[name].dtype, (video, name)
            assert np.array_equal(left[name], right[name]), f"{video}: {name} differs"


def test_one_pass_equals_two_passes(one_pass, two_pass) -> None:
    masklets, features = two_pass
    videos = one_pass.videos
    assert len(videos) == 2 and one_pass.computed == videos and one_pass.features_only == []
    assert one_pass.feature_directory is not None and one_pass.feature_directory.name.startswith("sam2encoder-")
    assert masklets.feature_directory is None and features.computed == videos
    # The same masklets (the writer only listens) and the same feature files.
    assert masklets.directory.name == one_pass.directory.name
    for video in videos:
        ours, table = open_cache(one_pass.directory).read_video(video)
        theirs, their_table = open_cache(masklets.directory).read_video(video)
        assert torch.equal(ours, theirs) and table.to_json() == their_table.to_json() and int(ours.max()) > 0
    assert_same_files(one_pass.feature_directory, features.directory, videos)
    cache = open_feature_cache(one_pass.feature_directory)
    assert cache.config["encoder"] == tiny_encoder().describe()
    assert cache.config["clip_len"] == FEATURE_CLIP
    assert cache.config["masklets"] == {"directory": one_pass.directory.name, "key": open_cache(one_pass.directory).key}
    # Not vacuous: masklets were found and pooled, with real targets and features.
    rows = [cache.read("train", video) for video in videos]
    assert one_pass.feature_rows == sum(len(r["ids"]) for r in rows) > 0
    assert all((r["target"] != 255).any() and np.abs(r["vectors"]).max() > 0 for r in rows)
    # Feature chunks of 3 frames: rows start at 0, 3, 6 even though masklet chunks were 4 long.
    assert set(np.concatenate([r["start"] for r in rows]).tolist()) <= {0, 3, 6}


def test_second_pass_and_rerun_skip_what_one_pass_wrote(data_root: Path, source: SAM2VideoSource, one_pass) -> None:
    data = feature_data(data_root, one_pass.directory)
    feature_root = one_pass.feature_directory.parent
    after = compute_feature_cache(tiny_encoder(), data, "train", feature_root=feature_root, progress=False)
    assert after.directory == one_pass.feature_directory
    assert after.computed == [] and after.skipped == one_pass.videos
    again = compute_cache(
        source,
        masklet_data(data_root),
        "train",
        cache_root=one_pass.directory.parent,
        progress=False,
        features=OnePassFeatures(clip_len=FEATURE_CLIP, feature_root=str(feature_root)),
    )
    assert again.skipped == one_pass.videos and again.computed == [] and again.features_only == []
    assert again.frames == again.features_only_frames == 0


def test_resume_after_kills(
    data_root: Path, source: SAM2VideoSource, one_pass, two_pass, tmp_path: Path, monkeypatch
) -> None:
    first, second = one_pass.videos
    features = OnePassFeatures(clip_len=FEATURE_CLIP, feature_root=str(tmp_path / "features"))

    def run():
        return compute_cache(
            source,
            masklet_data(data_root),
            "train",
            cache_root=tmp_path / "masklets",
            progress=False,
            features=features,
        )

    # Kill 1: between the first video's masklet .done and its feature file.
    finish = OnePassFeatureWriter.finish_video

    def killed_finish(self):
        raise Killed

    monkeypatch.setattr(OnePassFeatureWriter, "finish_video", killed_finish)
    with pytest.raises(Killed):
        run()
    masklets = open_cache(next((tmp_path / "masklets").iterdir()))
    feature_dir = next((tmp_path / "features").iterdir())
    assert masklets.is_done(first) and not (feature_dir / "train" / f"{first}.npz").exists()
    assert source.frame_listeners == []  # the writer detached itself

    # Kill 2: in the middle of the second video's masklets (its first chunk written, no .done).
    monkeypatch.setattr(OnePassFeatureWriter, "finish_video", finish)
    add_chunk = OnePassFeatureWriter.add_chunk

    def killed_add_chunk(self, start, segments, gt):
        if self._video == second:
            raise Killed
        add_chunk(self, start, segments, gt)

    monkeypatch.setattr(OnePassFeatureWriter, "add_chunk", killed_add_chunk)
    with pytest.raises(Killed):
        run()
    assert (feature_dir / "train" / f"{first}.npz").exists()  # pooled over the cached masklets
    assert not masklets.is_done(second) and masklets.video_dir(second).is_dir()

    # The rerun finishes: the first video is done, the second is computed from scratch.
    monkeypatch.setattr(OnePassFeatureWriter, "add_chunk", add_chunk)
    summary = run()
    assert summary.skipped == [first] and summary.computed == [second] and summary.features_only == []
    assert_same_files(feature_dir, two_pass[1].directory, one_pass.videos)
    for video in one_pass.videos:
        assert torch.equal(masklets.read_video(video)[0], open_cache(one_pass.directory).read_video(video)[0])


@pytest.mark.parametrize(("pooling", "per_frame", "clip_len"), [("nearest", True, MASKLET_CLIP)])
def test_features_from_cached_masklets(
    data_root: Path, source: SAM2VideoSource, one_pass, tmp_path: Path, pooling: str, per_frame: bool, clip_len: int
) -> None:
    """Masklets done, feature file missing: the encoder runs on the frames, the maps come from the cache."""
    masklet_dir = one_pass.directory
    before = {p: p.stat().st_mtime_ns for p in masklet_dir.rglob("*") if p.is_file()}
    features = OnePassFeatures(
        pooling=pooling, per_frame=per_frame, clip_len=clip_len, feature_root=str(tmp_path / "a")
    )
    summary = compute_cache(
        source, masklet_data(data_root), "train", cache_root=masklet_dir.parent, progress=False, features=features
    )
    assert summary.features_only == one_pass.videos and summary.computed == [] and summary.frames == 0
    assert before == {p: p.stat().st_mtime_ns for p in masklet_dir.rglob("*") if p.is_file()}
    data = feature_data(data_root, masklet_dir, clip_len)
    reference = compute_feature_cache(
        tiny_encoder(), data, "train", tmp_path / "b", pooling=pooling, per_frame=per_frame, progress=False
    )
    assert_same_files(summary.feature_directory, reference.directory, one_pass.videos)
    rows = open_feature_cache(reference.directory).read("train", one_pass.videos[0])
    assert (rows["frame"] >= 0).all()  # per-frame rows


def test_non_sam2_source_is_refused(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="need a SAM2 source.*OracleSource.*python -m vssam2.features"):
        compute_cache(OracleSource(), masklet_data(data_root), "train", cache_root=tmp_path, features=OnePassFeatures())


@pytest.fixture()
def masklet_cache(source: SAM2VideoSource, data_root: Path, tmp_path: Path) -> MaskletCache:
    data = masklet_data(data_root)
    return MaskletCache.create(tmp_path, cache_config(source, data.layout.name, data.clip_len, data.num_classes))


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (OnePassFeatures(level=0), r"level 0 \(FPN level 0\) cannot be pooled.*conv_s0"),
        (OnePassFeatures(level=-2), r"level -2 \(FPN level 1\) cannot be pooled.*conv_s1"),
        (OnePassFeatures(level=3), r"level 3 out of range.*3 FPN levels"),
        (OnePassFeatures(autocast=False, clip_len=0), r"clip_len must be >= 1"),
    ],
)
def test_unservable_features_are_refused(source, data_root, masklet_cache, features, message) -> None:
    with pytest.raises(ValueError, match=message):
        features.bind(source, masklet_data(data_root), masklet_cache, "train")


def test_precision_decides_the_encoder_key(source, data_root, masklet_cache, one_pass, monkeypatch, tmp_path) -> None:
    data = masklet_data(data_root)
    # float32 on CPU: SAM2Encoder's autocast flag changes nothing there, so either key is true
    # (the default, autocast true, is checked in test_one_pass_equals_two_passes).
    exact = OnePassFeatures(autocast=False, clip_len=FEATURE_CLIP, feature_root=str(tmp_path / "features")).bind(
        source, data, masklet_cache, "train"
    )
    assert exact.cache.config["encoder"] == tiny_encoder(autocast=False).describe()
    default = open_feature_cache(one_pass.feature_directory).config
    assert {**exact.cache.config, "encoder": default["encoder"]} == default
    # bf16 autocast on CPU: no SAM2Encoder computes these features.
    monkeypatch.setattr(source, "bf16", True)
    with pytest.raises(ValueError, match="bf16 on 'cpu'.*no feature cache key describes them"):
        OnePassFeatures().bind(source, data, masklet_cache, "train")


def test_a_modified_image_encoder_is_refused(source, data_root, masklet_cache) -> None:
    weight = source.predictor.image_encoder.trunk.patch_embed.proj.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1e-3)
    try:
        with pytest.raises(ValueError, match=r"image encoder differs from SAM2Encoder.*patch_embed"):
            OnePassFeatures().bind(source, masklet_data(data_root), masklet_cache, "train")
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_command_line_features_group(data_root: Path, one_pass) -> None:
    """``python -m vssam2.masklets --features.*`` reaches compute_cache (here: everything is done)."""
    from vssam2.masklets.__main__ import main

    summary = main(
        [
            "--config",
            str(REPO / "configs" / "masklets" / "sam2_tiny_one_pass_synthetic.yaml"),
            "--data.init_args.root",
            str(data_root),
            "--data.init_args.clip_len",
            str(MASKLET_CLIP),
            "--source.init_args.window",
            "3",
            "--source.init_args.max_objects",
            "2",
            "--source.init_args.proposal.points_per_side",
            "4",
            "--cache_root",
            str(one_pass.directory.parent),
            "--features.feature_root",
            str(one_pass.feature_directory.parent),
            "--features.clip_len",
            str(FEATURE_CLIP),
            "--progress",
            "false",
        ]
    )
    assert summary.directory == one_pass.directory and summary.feature_directory == one_pass.feature_directory
    assert summary.skipped == one_pass.videos
