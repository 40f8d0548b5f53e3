"""Tests of the VSPW / VIPSeg data modules: streaming, sharding, training clips, bad input."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import VIPSegDataModule, VSPWDataModule
from vssam2.datasets import VIPSEG_LAYOUT, balance_videos, index_split
from vssam2.errors import DataError
from vssam2.labels import raw_to_eval, vipseg_panoptic_to_eval

H, W = 12, 16  # tiny frames keep the whole file fast


# ------------------------------------------------------------------------------ data helpers


def frame_name(index: int) -> str:
    return f"{index:05d}"


def write_vspw_video(
    root: Path,
    video: str,
    num_frames: int,
    size: tuple[int, int] = (H, W),
    seed: int = 0,
    names: list[str] | None = None,
) -> list[np.ndarray]:
    """Writes a VSPW video (JPEG frames, raw-id PNG masks); returns the raw masks (H, W) uint8."""
    rng = np.random.default_rng(seed)
    frame_dir = root / "data" / video / "origin"
    mask_dir = root / "data" / video / "mask"
    frame_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    values = np.array([0, 1, 2, 50, 124, 255], dtype=np.uint8)
    masks = []
    for index in range(num_frames):
        name = names[index] if names else frame_name(index)
        frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(frame).save(frame_dir / f"{name}.jpg", quality=95)
        mask = values[rng.integers(0, len(values), size)]
        Image.fromarray(mask).save(mask_dir / f"{name}.png")
        masks.append(mask)
    return masks


def write_split(root: Path, split: str, videos: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{split}.txt").write_text("".join(f"{video}\n" for video in videos))


def write_preds(pred_root: Path, video: str, preds: list[np.ndarray], names: list[str] | None = None) -> None:
    folder = pred_root / video
    folder.mkdir(parents=True, exist_ok=True)
    for index, pred in enumerate(preds):
        Image.fromarray(pred).save(folder / f"{names[index] if names else frame_name(index)}.png")


def random_preds(num_frames: int, seed: int, size: tuple[int, int] = (H, W)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    preds = [rng.integers(0, 124, size, dtype=np.uint8) for _ in range(num_frames)]
    preds[0][0, 0] = 255  # "no prediction" is allowed
    return preds


VIDEO_LENGTHS = {"v_a": 10, "v_b": 7, "v_c": 3, "v_d": 9, "v_e": 5}


@pytest.fixture
def vspw(tmp_path: Path) -> SimpleNamespace:
    """A VSPW root with 5 val videos of different lengths, 2 train videos and 2 prediction folders."""
    root = tmp_path / "vspw"
    masks = {}
    preds: dict[str, dict[str, list[np.ndarray]]] = {"model_x": {}, "model_y": {}}
    for number, (video, length) in enumerate(VIDEO_LENGTHS.items()):
        masks[video] = write_vspw_video(root, video, length, seed=number)
        for offset, method in enumerate(preds):
            preds[method][video] = random_preds(length, seed=100 * offset + number)
            write_preds(tmp_path / "preds" / method, video, preds[method][video])
    write_split(root, "val", list(VIDEO_LENGTHS))
    for number, video in enumerate(["t_a", "t_b"]):
        write_vspw_video(root, video, 6, size=(20, 24), seed=50 + number)
    write_split(root, "train", ["t_a", "t_b"])
    return SimpleNamespace(root=root, masks=masks, preds=preds, pred_dir=tmp_path / "preds")


def read_jpeg(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ------------------------------------------------------------------------------ streaming


def test_stream_yields_every_frame_once_in_order(vspw: SimpleNamespace) -> None:
    dm = VSPWDataModule(str(vspw.root), clip_len=4)
    dm.setup("test")
    batches = list(dm.test_dataloader())
    seen: dict[str, list[str]] = {}
    for batch in batches:
        video = batch["video"]
        expected_start = len(seen.setdefault(video, []))
        assert batch["start"] == expected_start  # chunks of a video arrive in order
        assert batch["num_frames"] == VIDEO_LENGTHS[video]
        t = len(batch["frame_ids"])
        assert t == min(4, VIDEO_LENGTHS[video] - batch["start"])
        assert batch["last"] == (batch["start"] + t == VIDEO_LENGTHS[video])
        assert batch["frames"].shape == (t, H, W, 3) and batch["frames"].dtype == torch.uint8
        assert batch["gt"].shape == (t, H, W) and batch["gt"].dtype == torch.uint8
        assert batch["preds"] == {}
        for k, frame_id in enumerate(batch["frame_ids"]):
            index = batch["start"] + k
            assert frame_id == frame_name(index)
            expected_gt = raw_to_eval(vspw.masks[video][index])
            np.testing.assert_array_equal(batch["gt"][k].numpy(), expected_gt)
            frame_path = vspw.root / "data" / video / "origin" / f"{frame_id}.jpg"
            np.testing.assert_array_equal(batch["frames"][k].numpy(), read_jpeg(frame_path))
        seen[video].extend(batch["frame_ids"])
    assert {video: len(ids) for video, ids in seen.items()} == VIDEO_LENGTHS
    # 10, 7, 3, 9, 5 frames in chunks of 4 → 3 + 2 + 1 + 3 + 2 chunks.
    assert len(batches) == 11 == len(dm.test_dataloader())


def test_load_frames_false_omits_frames(vspw: SimpleNamespace) -> None:
    dm = VSPWDataModule(str(vspw.root), clip_len=16, load_frames=False)
    batches = list(dm.test_dataloader())
    assert len(batches) == len(VIDEO_LENGTHS)
    assert all("frames" not in batch and batch["last"] and batch["start"] == 0 for batch in batches)


def test_predictions_of_two_methods(vspw: SimpleNamespace) -> None:
    dm = VSPWDataModule(
        str(vspw.root),
        pred_root=str(vspw.pred_dir / "model_x"),
        pred_roots={"other": str(vspw.pred_dir / "model_y")},
        clip_len=3,
        load_frames=False,
    )
    assert dm.pred_names == ["model_x", "other"]
    frames = 0
    for batch in dm.test_dataloader():
        assert list(batch["preds"]) == ["model_x", "other"]
        for method, source in [("model_x", "model_x"), ("other", "model_y")]:
            pred = batch["preds"][method]
            assert pred.dtype == torch.uint8 and pred.shape == batch["gt"].shape
            expected = np.stack(vspw.preds[source][batch["video"]][batch["start"] : batch["start"] + len(pred)])
            np.testing.assert_array_equal(pred.numpy(), expected)
        frames += len(batch["frame_ids"])
    assert frames == sum(VIDEO_LENGTHS.values())


def test_conflicting_prediction_names_are_rejected(vspw: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="model_x"):
        VSPWDataModule(
            str(vspw.root),
            pred_root=str(vspw.pred_dir / "model_x"),
            pred_roots={"model_x": str(vspw.pred_dir / "model_y")},
        )


def test_frames_sorted_naturally(tmp_path: Path) -> None:
    names = [str(i) for i in range(12)]  # unpadded: "10" must come after "9"
    write_vspw_video(tmp_path, "vid", 12, names=names)
    write_split(tmp_path, "val", ["vid"])
    split = index_split(tmp_path, "val")
    assert list(split.videos[0].frame_ids) == names
    assert split.frame_counts() == {"vid": 12} and split.num_frames == 12


def test_balance_videos_is_greedy_and_deterministic() -> None:
    # Longest first to the lightest bin, ties → lowest bin; bins list indices in split order.
    assert balance_videos([10, 7, 3, 9, 5], 2) == [[0, 2, 4], [1, 3]]
    assert balance_videos([10, 7, 3, 9, 5], 3) == [[0], [2, 3], [1, 4]]
    assert balance_videos([4, 4, 4], 2) == [[0, 2], [1]]
    assert balance_videos([5], 3) == [[0], [], []]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_sharding_covers_split_exactly_once(vspw: SimpleNamespace, num_workers: int) -> None:
    dm = VSPWDataModule(str(vspw.root), clip_len=4, load_frames=False, num_workers=num_workers)
    expected = {(video, frame_name(i)) for video, length in VIDEO_LENGTHS.items() for i in range(length)}
    for world_size in (1, 2, 3):
        seen: list[tuple[str, str]] = []
        videos_per_rank = []
        for rank in range(world_size):
            rank_videos: dict[str, int] = {}
            for batch in dm.eval_dataloader("val", rank=rank, world_size=world_size):
                # Chunks of a video stay in order even when workers interleave.
                assert batch["start"] == rank_videos.get(batch["video"], 0)
                rank_videos[batch["video"]] = batch["start"] + len(batch["frame_ids"])
                seen.extend((batch["video"], frame_id) for frame_id in batch["frame_ids"])
            videos_per_rank.append(set(rank_videos))
        assert len(seen) == len(expected) and set(seen) == expected, (world_size, num_workers)
        for a in range(world_size):
            for b in range(a + 1, world_size):
                assert not videos_per_rank[a] & videos_per_rank[b]  # videos never split across ranks


def test_rank_comes_from_trainer(vspw: SimpleNamespace) -> None:
    dm = VSPWDataModule(str(vspw.root), clip_len=100, load_frames=False)
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2)  # what Lightning sets under DDP
    assert {batch["video"] for batch in dm.val_dataloader()} == {"v_b", "v_d"}


# ------------------------------------------------------------------------------ VIPSeg


def test_vipseg_panoptic_decoding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = np.array([0, 3, 124, 1201, 1202, 12405, 5000], dtype=np.uint16)  # stuff ids and class*100+instance
    panos = []
    for index in range(5):
        (tmp_path / "images" / "vid").mkdir(parents=True, exist_ok=True)
        (tmp_path / "panomasks" / "vid").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
            tmp_path / "images" / "vid" / f"{frame_name(index)}.jpg"
        )
        pano = values[rng.integers(0, len(values), (H, W))]
        Image.fromarray(pano).save(tmp_path / "panomasks" / "vid" / f"{frame_name(index)}.png")  # 16-bit PNG
        panos.append(pano)
    write_split(tmp_path, "val", ["vid"])
    dm = VIPSegDataModule(str(tmp_path), clip_len=2)
    assert dm.layout is VIPSEG_LAYOUT
    gts = [batch["gt"] for batch in dm.test_dataloader()]
    gt = torch.cat(gts).numpy()
    np.testing.assert_array_equal(gt, vipseg_panoptic_to_eval(np.stack(panos)))
    assert gt[np.stack(panos) == 1201].tolist() == [11] * int((np.stack(panos) == 1201).sum())


# ------------------------------------------------------------------------------ training


def test_training_batches_have_clip_shapes(vspw: SimpleNamespace) -> None:
    dm = VSPWDataModule(str(vspw.root), train_clip_len=3, train_crop=(8, 10), batch_size=2, train_clips_per_epoch=5)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert [len(batch["video"]) for batch in batches] == [2, 2, 1]
    batch = batches[0]
    assert batch["frames"].shape == (2, 3, 8, 10, 3) and batch["frames"].dtype == torch.uint8
    assert batch["gt"].shape == (2, 3, 8, 10) and batch["gt"].dtype == torch.uint8
    assert batch["start"].dtype == torch.int64 and all(0 <= s <= 3 for s in batch["start"].tolist())
    assert set(batch["video"]) <= {"t_a", "t_b"}
    # Masks are resized with nearest neighbour: only ids the masks hold (0..123, 255) appear.
    assert set(torch.unique(batch["gt"]).tolist()) <= set(raw_to_eval(np.array([0, 1, 2, 50, 124, 255])).tolist())


def test_training_with_workers(vspw: SimpleNamespace) -> None:
    dm = VSPWDataModule(
        str(vspw.root), train_clip_len=2, train_crop=(8, 8), batch_size=2, num_workers=2, train_clips_per_epoch=4
    )
    batches = list(dm.train_dataloader())
    assert sum(len(batch["video"]) for batch in batches) == 4
    assert all(batch["frames"].shape[1:] == (2, 8, 8, 3) for batch in batches)


def write_static_clip(root: Path, num_frames: int = 4) -> np.ndarray:
    """A training video whose frames are all identical and encode the raw mask (4 × raw id).

    Constant 8×8 blocks keep JPEG's error far below the ×4 spacing, so the raw mask can be
    read back from a decoded (and geometrically transformed) frame exactly.
    """
    rng = np.random.default_rng(3)
    mask = np.kron(rng.integers(1, 60, (3, 4)), np.ones((8, 8), dtype=np.int64)).astype(np.uint8)  # (24, 32)
    mask[:8, :8] = 0  # raw "others" → eval 255
    frame = np.repeat((mask * 4)[:, :, None], 3, axis=2)
    (root / "data" / "still" / "origin").mkdir(parents=True, exist_ok=True)
    (root / "data" / "still" / "mask").mkdir(parents=True, exist_ok=True)
    for index in range(num_frames):
        Image.fromarray(frame).save(root / "data" / "still" / "origin" / f"{frame_name(index)}.jpg", quality=95)
        Image.fromarray(mask).save(root / "data" / "still" / "mask" / f"{frame_name(index)}.png")
    write_split(root, "train", ["still"])
    return mask


def test_default_transform_is_clip_consistent(tmp_path: Path) -> None:
    write_static_clip(tmp_path)
    dm = VSPWDataModule(str(tmp_path), train_clip_len=4, train_crop=(16, 16), train_clips_per_epoch=1)
    dataset = dm.train_dataset()
    outputs = []
    for seed in range(6):
        torch.manual_seed(seed)
        item = dataset[0]
        frames, gt = item["frames"], item["gt"]
        assert frames.shape == (4, 16, 16, 3) and gt.shape == (4, 16, 16)
        # One sampled crop/flip/jitter for the whole clip: identical inputs stay identical.
        assert all(torch.equal(frames[0], frames[t]) and torch.equal(gt[0], gt[t]) for t in range(4))
        outputs.append(frames)
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])  # but clips differ
    torch.manual_seed(1)
    again = dataset[0]["frames"]
    assert torch.equal(again, outputs[1])  # reproducible from torch's seed


def test_custom_transform_keeps_masks_aligned(tmp_path: Path) -> None:
    write_static_clip(tmp_path)
    geometric = A.Compose(
        [
            A.RandomResizedCrop(size=(16, 16), scale=(0.5, 1.0), interpolation=cv2.INTER_NEAREST),
            A.HorizontalFlip(p=0.5),
        ]
    )
    dm = VSPWDataModule(str(tmp_path), train_clip_len=4, train_transform=geometric, train_clips_per_epoch=1)
    dataset = dm.train_dataset()
    for seed in range(4):
        torch.manual_seed(seed)
        item = dataset[0]
        # Same crop and flip on frames and masks: the raw id read back from the frame, remapped,
        # is the transformed mask pixel for pixel.
        raw = np.rint(item["frames"][..., 0].numpy() / 4).astype(np.uint8)
        np.testing.assert_array_equal(raw_to_eval(raw), item["gt"].numpy())


# ------------------------------------------------------------------------------ bad input


def corrupt_file(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")


def resize_file(path: Path, size: tuple[int, int]) -> None:
    array = np.asarray(Image.open(path))
    Image.fromarray(cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)).save(path)


VB = "v_b"  # the video the bad-input cases break (7 frames)


def _frame(root: Path, i: int = 2) -> Path:
    return root / "data" / VB / "origin" / f"{frame_name(i)}.jpg"


def _mask(root: Path, i: int = 2) -> Path:
    return root / "data" / VB / "mask" / f"{frame_name(i)}.png"


def _pred(pred_dir: Path, i: int = 2) -> Path:
    return pred_dir / "model_x" / VB / f"{frame_name(i)}.png"


# Each case breaks the fixture and returns the strings the DataError message must contain.
BadCase = Callable[[Path, Path], list[str]]


def case_missing_split(root: Path, pred_dir: Path) -> list[str]:
    (root / "val.txt").unlink()
    return [str(root / "val.txt"), "missing"]


def case_empty_split(root: Path, pred_dir: Path) -> list[str]:
    (root / "val.txt").write_text("\n\n")
    return [str(root / "val.txt"), "no videos"]


def case_duplicate_video(root: Path, pred_dir: Path) -> list[str]:
    (root / "val.txt").write_text("v_a\nv_b\nv_a\n")
    return [str(root / "val.txt"), "v_a", "more than once"]


def case_video_absent(root: Path, pred_dir: Path) -> list[str]:
    (root / "val.txt").write_text("v_a\nv_missing\n")
    return [str(root / "data" / "v_missing" / "origin"), "does not exist"]


def case_zero_frames(root: Path, pred_dir: Path) -> list[str]:
    for path in (root / "data" / VB / "origin").iterdir():
        path.unlink()
    return [str(root / "data" / VB / "origin"), "no *.jpg frames"]


def case_frame_without_mask(root: Path, pred_dir: Path) -> list[str]:
    _mask(root).unlink()
    return [str(_mask(root)), "frame without mask"]


def case_mask_without_frame(root: Path, pred_dir: Path) -> list[str]:
    _frame(root).unlink()
    return [str(_mask(root)), "mask without frame"]


def case_missing_prediction(root: Path, pred_dir: Path) -> list[str]:
    _pred(pred_dir).unlink()
    return [str(_pred(pred_dir)), "'model_x'", "missing"]


def case_missing_prediction_folder(root: Path, pred_dir: Path) -> list[str]:
    for path in (pred_dir / "model_x" / VB).iterdir():
        path.unlink()
    (pred_dir / "model_x" / VB).rmdir()
    return [str(pred_dir / "model_x" / VB), "'model_x'", "does not exist"]


def case_corrupt_frame(root: Path, pred_dir: Path) -> list[str]:
    _frame(root, 5).write_bytes(b"\xff\xd8\xff garbage")
    return [str(_frame(root, 5)), "cannot decode"]


def case_truncated_mask(root: Path, pred_dir: Path) -> list[str]:
    data = _mask(root, 5).read_bytes()
    _mask(root, 5).write_bytes(data[: len(data) // 2])
    return [str(_mask(root, 5)), "cannot decode"]


def case_corrupt_prediction(root: Path, pred_dir: Path) -> list[str]:
    corrupt_file(_pred(pred_dir))
    return [str(_pred(pred_dir)), "cannot decode"]


def case_frame_size_mismatch(root: Path, pred_dir: Path) -> list[str]:
    resize_file(_frame(root), (H + 2, W))
    return [str(_frame(root)), str(_mask(root)), f"{H + 2}x{W}", f"{H}x{W}"]


def case_prediction_size_mismatch(root: Path, pred_dir: Path) -> list[str]:
    resize_file(_pred(pred_dir), (H, W + 4))
    return [str(_pred(pred_dir)), str(_mask(root)), f"{H}x{W + 4}", f"{H}x{W}"]


def case_mask_size_changes_within_video(root: Path, pred_dir: Path) -> list[str]:
    for path in (_frame(root, 6), _mask(root, 6), _pred(pred_dir, 6)):
        resize_file(path, (H * 2, W * 2))
    return [str(_mask(root, 6)), str(_mask(root, 0)), f"{H * 2}x{W * 2}"]


def case_mask_ids_out_of_range(root: Path, pred_dir: Path) -> list[str]:
    mask = np.asarray(Image.open(_mask(root))).copy()
    mask[0, :2] = [200, 130]
    Image.fromarray(mask).save(_mask(root))
    return [str(_mask(root)), "130", "200", "out of range"]


def case_prediction_ids_out_of_range(root: Path, pred_dir: Path) -> list[str]:
    pred = np.asarray(Image.open(_pred(pred_dir))).copy()
    pred[1, 1] = 124
    Image.fromarray(pred).save(_pred(pred_dir))
    return [str(_pred(pred_dir)), "124", "'model_x'", "out of range"]


def case_rgb_prediction(root: Path, pred_dir: Path) -> list[str]:
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(_pred(pred_dir))
    return [str(_pred(pred_dir)), "single-channel"]


INDEX_CASES = [
    case_video_absent,
    case_zero_frames,
    case_frame_without_mask,
    case_mask_without_frame,
    case_missing_prediction,
    case_missing_prediction_folder,
]
LOAD_CASES = [
    case_corrupt_frame,
    case_truncated_mask,
    case_corrupt_prediction,
    case_frame_size_mismatch,
    case_prediction_size_mismatch,
    case_mask_size_changes_within_video,
    case_mask_ids_out_of_range,
    case_prediction_ids_out_of_range,
    case_rgb_prediction,
]
SPLIT_CASES = [case_missing_split, case_empty_split, case_duplicate_video]


def pred_module(vspw: SimpleNamespace, **kwargs: object) -> VSPWDataModule:
    return VSPWDataModule(str(vspw.root), pred_root=str(vspw.pred_dir / "model_x"), clip_len=4, **kwargs)


@pytest.mark.parametrize("case", SPLIT_CASES + INDEX_CASES + LOAD_CASES, ids=lambda case: case.__name__[5:])
def test_bad_input_raises_data_error_naming_file(vspw: SimpleNamespace, case: BadCase) -> None:
    expected = case(vspw.root, vspw.pred_dir)
    dm = pred_module(vspw)
    with pytest.raises(DataError) as info:
        dm.setup("test")
        for _ in dm.test_dataloader():
            pass
    for text in expected:
        assert text in str(info.value), (text, str(info.value))
    if case in INDEX_CASES + SPLIT_CASES:
        # Index-time problems surface at setup, before any file is decoded.
        with pytest.raises(DataError):
            pred_module(vspw).setup("test")


def drain(loader: torch.utils.data.DataLoader) -> None:
    """Iterates a loader to the end, shutting its workers down at once even on error.

    Otherwise the traceback's frames keep the iterator alive in a reference cycle; when the
    garbage collector breaks it, the worker queues may be closed first and each worker then
    takes the DataLoader's 5 s join timeout to stop. There is no public shutdown call.
    """
    iterator = iter(loader)
    try:
        for _ in iterator:
            pass
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


@pytest.mark.parametrize("case", [case_corrupt_frame, case_mask_ids_out_of_range], ids=["frame", "mask"])
def test_load_errors_surface_in_workers(vspw: SimpleNamespace, case: BadCase) -> None:
    expected = case(vspw.root, vspw.pred_dir)
    dm = pred_module(vspw, num_workers=2)
    with pytest.raises(DataError) as info:
        drain(dm.test_dataloader())
    assert expected[0] in str(info.value)


@pytest.mark.parametrize("case", INDEX_CASES, ids=lambda case: case.__name__[5:])
def test_skip_bad_videos_skips_warns_and_records(vspw: SimpleNamespace, case: BadCase) -> None:
    expected = case(vspw.root, vspw.pred_dir)
    dm = pred_module(vspw, skip_bad_videos=True, load_frames=False)
    with pytest.warns(UserWarning, match="skipping") as record:
        dm.setup("test")
    assert any(expected[0] in str(warning.message) for warning in record)
    assert len(dm.skipped) == 1
    video, reason = dm.skipped[0]
    assert video == ("v_missing" if case is case_video_absent else VB)
    assert expected[0] in reason
    streamed = {batch["video"] for batch in dm.test_dataloader()}
    assert streamed == ({"v_a"} if case is case_video_absent else set(VIDEO_LENGTHS) - {VB})


def test_skip_bad_videos_all_bad_is_still_an_error(vspw: SimpleNamespace) -> None:
    for video in VIDEO_LENGTHS:
        (vspw.root / "data" / video / "mask" / f"{frame_name(0)}.png").unlink()
    dm = VSPWDataModule(str(vspw.root), skip_bad_videos=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="none of its 5 videos is usable") as info:
            dm.setup("test")
    assert str(vspw.root / "val.txt") in str(info.value)


@pytest.mark.parametrize("case", [case_truncated_mask, case_prediction_size_mismatch], ids=["corrupt", "size"])
def test_load_errors_raise_even_with_skip_flag(vspw: SimpleNamespace, case: BadCase) -> None:
    expected = case(vspw.root, vspw.pred_dir)
    dm = pred_module(vspw, skip_bad_videos=True)
    dm.setup("test")
    with pytest.raises(DataError) as info:
        list(dm.test_dataloader())
    assert expected[0] in str(info.value)


@pytest.mark.parametrize("case", [case_truncated_mask, case_prediction_ids_out_of_range], ids=["corrupt", "ids"])
def test_prevalidate_finds_load_errors_at_setup(vspw: SimpleNamespace, case: BadCase) -> None:
    expected = case(vspw.root, vspw.pred_dir)
    with pytest.raises(DataError) as info:
        pred_module(vspw, prevalidate=True).setup("test")
    assert expected[0] in str(info.value)

    dm = pred_module(vspw, prevalidate=True, skip_bad_videos=True, num_workers=2)
    with pytest.warns(UserWarning, match="skipping"):
        dm.setup("test")
    assert [video for video, _ in dm.skipped] == [VB] and expected[0] in dm.skipped[0][1]
    frames = sum(len(batch["frame_ids"]) for batch in dm.test_dataloader())
    assert frames == sum(VIDEO_LENGTHS.values()) - VIDEO_LENGTHS[VB]


def test_max_videos_counts_usable_videos(vspw: SimpleNamespace) -> None:
    (vspw.root / "data" / "v_a" / "mask" / f"{frame_name(0)}.png").unlink()
    dm = VSPWDataModule(str(vspw.root), skip_bad_videos=True, max_videos=2, load_frames=False)
    with pytest.warns(UserWarning):
        split = dm.index("val")
    assert [video.name for video in split.videos] == ["v_b", "v_c"]
    assert [video for video, _ in dm.skipped] == ["v_a"]


def test_configurable_from_jsonargparse(vspw: SimpleNamespace) -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_class_arguments(VSPWDataModule, "data")
    config = parser.parse_args(
        ["--data.root", str(vspw.root), "--data.pred_roots", '{"x": "/p/x"}', "--data.train_crop", "[32, 48]"]
    )
    dm = parser.instantiate(config).data
    assert isinstance(dm, VSPWDataModule) and dm.pred_names == ["x"] and dm.train_crop == (32, 48)


# ------------------------------------------------------------------------------ synthetic data


def test_streams_synthetic_dataset(tmp_path: Path) -> None:
    synthetic = pytest.importorskip("vssam2.synthetic")
    config = synthetic.SyntheticConfig(
        height=48, width=64, min_frames=18, max_frames=20, videos={"train": 2, "val": 2, "test": 1}, seed=0
    )
    synthetic.write_synthetic(tmp_path, config)
    models = ["sim_strong", "sim_boundary", "sim_flicker"]
    pred_roots = {model: str(tmp_path / "predictions" / "vspw" / model) for model in models}
    dm = VSPWDataModule(str(tmp_path / "vspw"), pred_roots=pred_roots, clip_len=4, num_workers=2)
    dm.setup("test")
    counts = dm.index("val").frame_counts()
    streamed: dict[str, int] = {}
    for batch in dm.test_dataloader():
        assert list(batch["preds"]) == models
        assert batch["frames"].shape[:3] == batch["gt"].shape == batch["preds"]["sim_strong"].shape
        streamed[batch["video"]] = streamed.get(batch["video"], 0) + len(batch["frame_ids"])
    assert streamed == counts and len(counts) == 2
    vipseg = VIPSegDataModule(str(tmp_path / "vipseg"), clip_len=4, load_frames=False)
    assert sum(len(b["frame_ids"]) for b in vipseg.test_dataloader()) == vipseg.index("val").num_frames


def test_frames_read_side_by_side_report_the_first_bad_frame(vspw: SimpleNamespace) -> None:
    """A chunk's files are decoded on several threads; the error is still the first bad frame's."""
    corrupt_file(_mask(vspw.root, 3))  # frames 0-3 are one chunk (clip_len=4)
    corrupt_file(_pred(vspw.pred_dir, 1))
    dm = pred_module(vspw)
    dm.setup("test")
    with pytest.raises(DataError) as info:
        for _ in dm.test_dataloader():
            pass
    assert str(_pred(vspw.pred_dir, 1)) in str(info.value)
    assert str(_mask(vspw.root, 3)) not in str(info.value)
