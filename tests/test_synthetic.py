"""Tests of the synthetic VSPW / VIPSeg generator and the simulated predictions."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from vssam2.labels import NUM_CLASSES, raw_to_eval, vipseg_panoptic_to_eval, vipseg_panoptic_to_raw
from vssam2.synthetic import (
    PROFILES,
    PredictionProfile,
    SyntheticConfig,
    classwise_classes,
    generate_video,
    iter_videos,
    main,
    read_split,
    read_video_labels,
    simulate_prediction,
    to_vipseg_panoptic,
    video_rng,
    write_predictions,
    write_synthetic,
    write_vipseg,
    write_vspw,
)

SPLITS = ("train", "val", "test")
MODELS = ("sim_strong", "sim_boundary", "sim_flicker")
# sha256 (first 16 hex digits) of each profile's prediction of one fixed clip, computed before the
# class-dependent terms existed: those terms must leave every other profile's draws unchanged.
PREDICTION_DIGESTS = {
    "sim_strong": "43087fe0be85cd40",
    "sim_boundary": "0d5405f80f82f3a9",
    "sim_flicker": "2881bdb5a0e05f33",
}


def tiny_config(**overrides: object) -> SyntheticConfig:
    """A dataset small enough that writing it takes a fraction of a second."""
    settings: dict[str, object] = dict(
        height=48, width=64, min_frames=18, max_frames=20, videos={"train": 1, "val": 2, "test": 1}
    )
    settings.update(overrides)
    return SyntheticConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticConfig, dict[str, Path]]:
    root = tmp_path_factory.mktemp("synthetic")
    config = tiny_config()
    return root, config, write_synthetic(root, config)


def _all_videos(dataset_root: Path) -> list[str]:
    return [name for split in SPLITS for name in read_split(dataset_root, split)]


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------- layout


def test_write_synthetic_returns_every_folder(written: tuple[Path, SyntheticConfig, dict[str, Path]]) -> None:
    root, config, paths = written
    expected = {"vspw", "vipseg"} | {f"predictions/{lay}/{m}" for lay in ("vspw", "vipseg") for m in config.models}
    assert set(paths) == expected
    for key, path in paths.items():
        assert path == root / key
        assert path.is_dir()
    assert sorted(os.listdir(root)) == ["predictions", "vipseg", "vspw"]


def test_vspw_layout(written: tuple[Path, SyntheticConfig, dict[str, Path]]) -> None:
    root, config, paths = written
    vspw = paths["vspw"]
    assert sorted(os.listdir(vspw)) == ["data", "test.txt", "train.txt", "val.txt"]
    names = _all_videos(vspw)
    assert [len(read_split(vspw, s)) for s in SPLITS] == [config.videos[s] for s in SPLITS]
    assert len(set(names)) == len(names), "video names must be unique across splits"
    assert sorted(os.listdir(vspw / "data")) == sorted(names)
    for name in names:
        assert sorted(os.listdir(vspw / "data" / name)) == ["mask", "origin"]
        jpgs = sorted((vspw / "data" / name / "origin").iterdir())
        pngs = sorted((vspw / "data" / name / "mask").iterdir())
        assert config.min_frames <= len(jpgs) <= config.max_frames
        assert [p.name for p in jpgs] == [f"{i:08d}.jpg" for i in range(len(jpgs))]
        assert [p.name for p in pngs] == [f"{i:08d}.png" for i in range(len(jpgs))]
        for jpg, png in zip(jpgs[:2], pngs[:2]):
            with Image.open(jpg) as image, Image.open(png) as mask:
                assert image.format == "JPEG" and image.mode == "RGB"
                assert mask.format == "PNG" and mask.mode in ("P", "L")
                assert image.size == mask.size == (config.width, config.height)
                assert np.array(mask).dtype == np.uint8


def test_vipseg_layout(written: tuple[Path, SyntheticConfig, dict[str, Path]]) -> None:
    root, config, paths = written
    vipseg, vspw = paths["vipseg"], paths["vspw"]
    assert sorted(os.listdir(vipseg)) == ["images", "panomasks", "test.txt", "train.txt", "val.txt"]
    for split in SPLITS:
        assert read_split(vipseg, split) == read_split(vspw, split)
    names = _all_videos(vipseg)
    assert sorted(os.listdir(vipseg / "images")) == sorted(os.listdir(vipseg / "panomasks")) == sorted(names)
    for name in names:
        jpgs = sorted((vipseg / "images" / name).iterdir())
        pngs = sorted((vipseg / "panomasks" / name).iterdir())
        vspw_masks = sorted((vspw / "data" / name / "mask").iterdir())
        assert [p.stem for p in jpgs] == [p.stem for p in pngs] == [p.stem for p in vspw_masks]
        with Image.open(jpgs[0]) as image, Image.open(pngs[0]) as mask:
            assert image.mode == "RGB" and mask.mode == "I;16"
            assert image.size == mask.size == (config.width, config.height)
            assert np.array(mask).dtype == np.uint16
        # Both layouts show the same frames.
        vspw_frame = vspw / "data" / name / "origin" / jpgs[0].name
        assert jpgs[0].read_bytes() == vspw_frame.read_bytes()


def test_raw_ids_are_valid_and_include_others_and_void(written: tuple[Path, SyntheticConfig, dict[str, Path]]) -> None:
    _, _, paths = written
    for name in _all_videos(paths["vspw"]):
        raw = np.stack([np.array(Image.open(p)) for p in sorted((paths["vspw"] / "data" / name / "mask").iterdir())])
        ids = set(np.unique(raw).tolist())
        assert ids <= set(range(NUM_CLASSES + 1)) | {255}
        assert 0 in ids and 255 in ids, f"{name} lacks others (0) or void (255): {sorted(ids)}"
        assert len(ids - {0, 255}) >= 3, "a video shows several real classes"
        # Others and void are small, as in VSPW.
        assert 0 < np.isin(raw, (0, 255)).mean() < 0.25


def test_vipseg_decodes_to_the_vspw_labels(written: tuple[Path, SyntheticConfig, dict[str, Path]]) -> None:
    _, _, paths = written
    for name in _all_videos(paths["vspw"]):
        frames, raw_eval = read_video_labels(paths["vspw"], name, "vspw")
        panoptic = np.stack([np.array(Image.open(paths["vipseg"] / "panomasks" / name / f"{f}.png")) for f in frames])
        raw = np.stack([np.array(Image.open(paths["vspw"] / "data" / name / "mask" / f"{f}.png")) for f in frames])
        np.testing.assert_array_equal(vipseg_panoptic_to_eval(panoptic), raw_to_eval(raw))
        # Exactly the raw ids, except void written as 0 (both ignored).
        np.testing.assert_array_equal(vipseg_panoptic_to_raw(panoptic), np.where(raw == 255, 0, raw))
        things = panoptic >= 125
        assert things.any(), "every video has thing instances"
        assert set(np.unique(panoptic[things] % 100).tolist()) <= set(range(1, 100))


# ---------------------------------------------------------------------------- predictions


def test_predictions_layout_and_range(written: tuple[Path, SyntheticConfig, dict[str, Path]]) -> None:
    _, config, paths = written
    assert config.prediction_splits == ("train", "val") and "sim_classwise" in config.models
    predicted = read_split(paths["vspw"], "train") + read_split(paths["vspw"], "val")
    for layout in ("vspw", "vipseg"):
        for model in config.models:
            folder = paths[f"predictions/{layout}/{model}"]
            assert sorted(os.listdir(folder)) == sorted(predicted)
            for name in predicted:
                frames, gt = read_video_labels(paths[layout], name, layout)
                files = sorted((folder / name).iterdir())
                assert [p.stem for p in files] == frames
                with Image.open(files[0]) as first:
                    assert first.mode == "L" and first.size == (config.width, config.height)
                pred = np.stack([np.array(Image.open(p)) for p in files])
                assert pred.dtype == np.uint8 and pred.shape == gt.shape
                assert pred.max() < NUM_CLASSES, "a model predicts a class everywhere, never 255"
    # Same ground truth, same seed: both layouts get the same predictions.
    assert _digests(paths["predictions/vspw/sim_flicker"]) == _digests(paths["predictions/vipseg/sim_flicker"])


def test_write_predictions_from_vipseg_equals_the_copied_folders(
    written: tuple[Path, SyntheticConfig, dict[str, Path]], tmp_path: Path
) -> None:
    _, config, paths = written
    for split in config.prediction_splits:
        folders = write_predictions(paths["vipseg"], tmp_path, config, split=split, layout="vipseg")
    assert folders == {model: tmp_path / model for model in config.models}
    for model, folder in folders.items():
        assert _digests(folder) == _digests(paths[f"predictions/vipseg/{model}"])


def test_write_predictions_other_split(written: tuple[Path, SyntheticConfig, dict[str, Path]], tmp_path: Path) -> None:
    _, config, paths = written
    folders = write_predictions(paths["vspw"], tmp_path, replace(config, models=("sim_strong",)), split="train")
    assert folders == {"sim_strong": tmp_path / "sim_strong"}
    assert sorted(os.listdir(tmp_path / "sim_strong")) == read_split(paths["vspw"], "train")


def test_simulate_prediction_contract() -> None:
    gt = np.full((3, 16, 20), 255, dtype=np.uint8)
    gt[:, :8] = 4
    gt[:, 12:, 10:] = 90
    for profile in PROFILES:
        pred = simulate_prediction(gt, profile, np.random.default_rng(0))
        assert pred.shape == gt.shape and pred.dtype == np.uint8
        assert pred.max() < NUM_CLASSES
        again = simulate_prediction(gt, profile, np.random.default_rng(0))
        np.testing.assert_array_equal(pred, again)
    # Ignore everywhere still gives a valid prediction; a small label space is respected.
    all_ignore = np.full((2, 8, 8), 255, np.uint8)
    assert simulate_prediction(all_ignore, "sim_flicker", np.random.default_rng(1)).max() < NUM_CLASSES
    few_classes = np.where(gt == 255, 255, gt % 5).astype(np.uint8)
    small = simulate_prediction(few_classes, "sim_boundary", np.random.default_rng(2), num_classes=5)
    assert small.max() < 5
    # Ignore pixels take the nearest class (no noise profile at all).
    clean = simulate_prediction(gt, PredictionProfile(), np.random.default_rng(0))
    np.testing.assert_array_equal(clean[gt != 255], gt[gt != 255])
    assert clean[0, 9, 0] == 4 and clean[0, 13, 19] == 90
    with pytest.raises(KeyError):
        simulate_prediction(gt, "sim_unknown", np.random.default_rng(0))
    with pytest.raises(ValueError):
        simulate_prediction(np.full((1, 4, 4), 124, np.uint8), "sim_strong", np.random.default_rng(0))
    with pytest.raises(ValueError):
        simulate_prediction(np.zeros((4, 4), np.uint8), "sim_strong", np.random.default_rng(0))


def test_train_predictions_are_the_seeded_simulation(written: tuple[Path, SyntheticConfig, dict[str, Path]]) -> None:
    """A refinement rule is trained on train: its videos get the same seeded predictions as val's."""
    _, config, paths = written
    (video,) = read_split(paths["vspw"], "train")
    frames, gt = read_video_labels(paths["vspw"], video)
    for model in ("sim_strong", "sim_classwise"):
        stored = np.stack(
            [np.array(Image.open(paths[f"predictions/vspw/{model}"] / video / f"{f}.png")) for f in frames]
        )
        expected = simulate_prediction(gt, model, video_rng(config.seed, "prediction", model, video))
        np.testing.assert_array_equal(stored, expected)


def test_existing_profiles_predict_as_before() -> None:
    video = generate_video(video_rng(0, "unit"), tiny_config(), 17, scene="street", name="v")
    gt = video.eval_labels
    for model, digest in PREDICTION_DIGESTS.items():
        pred = simulate_prediction(gt, model, video_rng(0, "prediction", model, "v"))
        assert hashlib.sha256(pred.tobytes()).hexdigest()[:16] == digest, model
    # The class-dependent terms switched off leave sim_classwise a plain jittery model.
    plain = replace(PROFILES["sim_classwise"], class_swap_fraction=0.0, class_bleed_fraction=0.0)
    reference = PredictionProfile(jitter_px=1.5, jitter_period=16, persistent_blobs=1.0, blob_radius=(0.03, 0.07))
    np.testing.assert_array_equal(
        simulate_prediction(gt, plain, np.random.default_rng(5)),
        simulate_prediction(gt, reference, np.random.default_rng(5)),
    )


def test_classwise_classes_are_fixed_disjoint_subsets() -> None:
    swapped, bleeding = classwise_classes("sim_classwise")
    assert not set(swapped.tolist()) & set(bleeding.tolist())
    for subset in (swapped, bleeding):
        assert 0.1 * NUM_CLASSES < len(subset) < 0.3 * NUM_CLASSES  # about a fifth of all classes each
    again = classwise_classes(replace(PROFILES["sim_classwise"], jitter_px=0.0))  # only class terms choose
    np.testing.assert_array_equal(again[0], swapped)
    other = classwise_classes(replace(PROFILES["sim_classwise"], class_seed=17))
    assert not np.array_equal(other[0], swapped)
    # A class's membership is its own draw: the same in a smaller label space.
    few, _ = classwise_classes("sim_classwise", num_classes=40)
    np.testing.assert_array_equal(few, swapped[swapped < 40])
    assert all(len(s) == 0 for s in classwise_classes("sim_strong"))
    with pytest.raises(ValueError, match="class_swap_fraction"):
        PredictionProfile(class_swap_fraction=0.7, class_bleed_fraction=0.5)
    with pytest.raises(ValueError, match="class_bleed_px"):
        PredictionProfile(class_bleed_px=-1)


def test_classwise_errors_are_the_same_classes_in_every_video() -> None:
    """In clips of different seeds and scenes, exactly the swapped classes are mostly predicted as
    their look-alike (so the vote inside a pure GT component picks it), and bleeding classes grow."""
    from vssam2.synthetic import _lookalike_lut

    swapped, bleeding = classwise_classes("sim_classwise")
    lookalike = _lookalike_lut(NUM_CLASSES)
    config = tiny_config(num_things=4)
    seen_swapped, seen_bleeding = set(), set()
    voted = total = 0
    for seed, scene in ((0, "street"), (1, "park"), (3, "beach")):
        gt = generate_video(video_rng(seed, "classwise"), config, 12, scene=scene).eval_labels
        pred = simulate_prediction(gt, "sim_classwise", video_rng(seed, "prediction", "sim_classwise"))
        mostly_lookalike, large = set(), set()
        for cls in np.unique(gt[gt != 255]).tolist():
            inside = gt == cls
            if inside.sum() < 500:
                continue
            large.add(cls)
            if (pred[inside] == lookalike[cls]).mean() > 0.5:
                mostly_lookalike.add(cls)
            if cls in bleeding:
                seen_bleeding.add(cls)
                assert (pred == cls).sum() > 1.3 * inside.sum(), f"bleeding class {cls} did not grow"
        assert mostly_lookalike == large & set(swapped.tolist()), (seed, mostly_lookalike)
        seen_swapped |= mostly_lookalike
        # GT components (8-connected, per frame) of the swapped classes: the oracle's masklets.
        for frame_gt, frame_pred in zip(gt, pred):
            for cls in np.intersect1d(swapped, frame_gt).tolist():
                components, count = ndimage.label(frame_gt == cls, structure=np.ones((3, 3)))
                for k in range(1, count + 1):
                    part = components == k
                    if part.sum() >= 20:
                        total += 1
                        voted += int(np.bincount(frame_pred[part]).argmax() == lookalike[cls])
    assert len(seen_swapped) >= 3 and len(seen_bleeding) >= 2, (seen_swapped, seen_bleeding)
    assert voted >= 0.8 * total and total >= 20, (voted, total)


def _boundary_band(gt: np.ndarray, width: int = 3) -> np.ndarray:
    """Valid pixels with another label within `width` pixels in the same frame."""
    size = (1, 2 * width + 1, 2 * width + 1)
    highest = ndimage.maximum_filter(gt, size=size, mode="nearest")
    lowest = ndimage.minimum_filter(gt, size=size, mode="nearest")
    mixed = highest != lowest
    return mixed & (gt != 255)


def test_profiles_rank_as_designed(written: tuple[Path, SyntheticConfig, dict[str, Path]]) -> None:
    """strong is best everywhere, boundary worst at boundaries, flicker least stable in time."""
    _, config, paths = written
    totals = {m: np.zeros(6) for m in MODELS}
    for name in read_split(paths["vspw"], "val"):
        frames, gt = read_video_labels(paths["vspw"], name)
        valid, band = gt != 255, _boundary_band(gt)
        gt_stable = gt[1:] == gt[:-1]  # (T-1, H, W): pixels whose GT does not change
        for model in MODELS:
            folder = paths[f"predictions/vspw/{model}"] / name
            pred = np.stack([np.array(Image.open(folder / f"{f}.png")) for f in frames])
            correct = pred == gt
            changed = (pred[1:] != pred[:-1]) & gt_stable
            totals[model] += [
                correct[valid].sum(), valid.sum(), correct[band].sum(), band.sum(), changed.sum(), gt_stable.sum()
            ]  # fmt: skip
    accuracy = {m: t[0] / t[1] for m, t in totals.items()}
    boundary = {m: t[2] / t[3] for m, t in totals.items()}
    flicker = {m: t[4] / t[5] for m, t in totals.items()}
    assert accuracy["sim_strong"] > 0.9
    assert min(accuracy.values()) > 0.7, accuracy
    assert accuracy["sim_strong"] > max(accuracy["sim_boundary"], accuracy["sim_flicker"]), accuracy
    assert boundary["sim_strong"] > boundary["sim_flicker"] > boundary["sim_boundary"], boundary
    assert flicker["sim_flicker"] > flicker["sim_boundary"] > flicker["sim_strong"], flicker


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    config = tiny_config(videos={"train": 1, "val": 1, "test": 0}, models=("sim_flicker",), prediction_splits=("val",))
    write_synthetic(tmp_path / "a", config)
    write_synthetic(tmp_path / "b", config)
    first, second = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert first == second
    assert any(k.endswith(".png") and "/mask/" in k for k in first)
    write_synthetic(tmp_path / "c", replace(config, seed=1))
    third = _digests(tmp_path / "c")
    # No mask and no prediction of the other seed is byte-identical to one of this seed.
    for kind in ("/mask/", "predictions/"):
        assert not {v for k, v in first.items() if kind in k} & {v for k, v in third.items() if kind in k}


def test_adding_videos_leaves_other_videos_unchanged() -> None:
    small = {v.name: v for _, v in iter_videos(tiny_config(videos={"train": 1, "val": 1}))}
    large = {v.name: v for _, v in iter_videos(tiny_config(videos={"train": 2, "val": 1, "test": 1}))}
    assert set(small) < set(large)
    for name, video in small.items():
        np.testing.assert_array_equal(video.frames, large[name].frames)
        np.testing.assert_array_equal(video.raw, large[name].raw)


def test_write_vspw_and_write_vipseg_alone_match_write_synthetic(
    written: tuple[Path, SyntheticConfig, dict[str, Path]], tmp_path: Path
) -> None:
    _, config, paths = written
    assert write_vspw(tmp_path / "vspw", config) == tmp_path / "vspw"
    assert write_vipseg(tmp_path / "vipseg", config) == tmp_path / "vipseg"
    assert _digests(tmp_path / "vspw") == _digests(paths["vspw"])
    assert _digests(tmp_path / "vipseg") == _digests(paths["vipseg"])


# ------------------------------------------------------------------------------ generator


def test_generate_video_arrays() -> None:
    config = tiny_config(num_things=4)
    video = generate_video(video_rng(0, "unit"), config, 17, scene="street", name="v")
    assert video.num_frames == 17 and video.scene == "street" and video.name == "v"
    assert video.frames.shape == (17, 48, 64, 3) and video.frames.dtype == np.uint8
    assert video.raw.shape == video.instances.shape == (17, 48, 64)
    assert video.raw.dtype == np.uint8 and video.instances.dtype == np.int32
    assert set(video.instance_classes) == {1, 2, 3, 4}
    for instance, raw_id in video.instance_classes.items():
        assert (video.raw[video.instances == instance] == raw_id).all()
    assert (video.instances[np.isin(video.raw, (0, 255))] == 0).all()
    assert video.frames.std() > 10, "frames are textured, not flat"
    # Objects move: thing masks differ between the first and last frame.
    assert ((video.instances[0] > 0) != (video.instances[-1] > 0)).any()
    np.testing.assert_array_equal(video.eval_labels, raw_to_eval(video.raw))
    np.testing.assert_array_equal(vipseg_panoptic_to_eval(video.panoptic), video.eval_labels)


def test_to_vipseg_panoptic_encoding() -> None:
    raw = np.array([[0, 1, 61], [255, 124, 49]], dtype=np.uint8)
    instances = np.array([[0, 0, 3], [0, 0, 1]], dtype=np.int32)
    np.testing.assert_array_equal(to_vipseg_panoptic(raw, instances), [[0, 1, 6103], [0, 124, 4901]])
    with pytest.raises(ValueError):
        to_vipseg_panoptic(raw, np.full(raw.shape, 100))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SyntheticConfig(min_frames=10, max_frames=5)
    with pytest.raises(ValueError):
        SyntheticConfig(models=("sim_unknown",))
    with pytest.raises(ValueError):
        SyntheticConfig(num_things=100)
    with pytest.raises(ValueError, match="prediction_splits"):
        SyntheticConfig(prediction_splits=("train", "dev"))
    with pytest.raises(ValueError, match="prediction_splits"):
        SyntheticConfig(prediction_splits=("val", "val"))
    default = SyntheticConfig()
    assert default.min_frames > 16 and default.videos == {"train": 6, "val": 4, "test": 2}


# ------------------------------------------------------------------------------------- CLI


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "--root", str(tmp_path), "--seed", "3", "--height", "32", "--width", "40",
            "--min-frames", "17", "--max-frames", "17",
            "--videos-train", "1", "--videos-val", "1", "--videos-test", "0",
            "--models", "sim_strong", "sim_flicker", "--prediction-splits", "val",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert str(tmp_path / "vspw") in out and "predictions/vipseg/sim_flicker" in out
    assert read_split(tmp_path / "vspw", "test") == []
    (val,) = read_split(tmp_path / "vspw", "val")
    masks = sorted((tmp_path / "vspw" / "data" / val / "mask").iterdir())
    assert len(masks) == 17
    assert np.array(Image.open(masks[0])).shape == (32, 40)
    assert sorted(os.listdir(tmp_path / "predictions" / "vspw")) == ["sim_flicker", "sim_strong"]
    assert os.listdir(tmp_path / "predictions" / "vspw" / "sim_strong") == [val]  # no train predictions
