"""Tests of the probability folders: the top-k format, validation, streaming, simulated models."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import VIPSegDataModule, VSPWDataModule
from vssam2 import synthetic
from vssam2.errors import DataError
from vssam2.probabilities import (
    PROB_SUFFIX,
    TopKProbs,
    read_prob_frame,
    read_prob_k,
    simulate_probabilities,
    write_prob_frame,
    write_probabilities,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W, K, C = 6, 7, 3, 124
MODELS = ["sim_strong", "sim_boundary", "sim_flicker"]


def valid_frame(seed: int = 0, k: int = K, size: tuple[int, int] = (H, W)) -> tuple[np.ndarray, np.ndarray]:
    """A valid (classes, probs) pair: distinct ids per pixel, sorted probabilities summing to <= 1."""
    rng = np.random.default_rng(seed)
    scores = rng.random((C, *size))  # (C, H, W)
    order = np.argsort(-scores, axis=0)[:k]
    probs = np.take_along_axis(scores / scores.sum(axis=0), order, axis=0)  # (k, H, W)
    return order.astype(np.uint8), probs.astype(np.float16)


# ------------------------------------------------------------------------------ format


def test_round_trip_is_exact_and_atomic(tmp_path: Path) -> None:
    classes, probs = valid_frame()
    path = write_prob_frame(tmp_path / f"00000{PROB_SUFFIX}", classes, probs)
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind
    read_classes, read_probs = read_prob_frame(path, C, (H, W), k=K)
    assert read_classes.dtype == np.uint8 and read_probs.dtype == np.float16
    np.testing.assert_array_equal(read_classes, classes)
    np.testing.assert_array_equal(read_probs, probs)
    assert read_prob_k(path) == K
    with np.load(path) as npz:  # a plain .npz any numpy reads
        assert sorted(npz.files) == ["classes", "probs"]
    with pytest.raises(ValueError, match="float16"):
        write_prob_frame(tmp_path / "bad.npz", classes, probs.astype(np.float32))


def test_from_logits_matches_softmax_then_sort() -> None:
    logits = torch.randn(2, 9, 4, 5, generator=torch.Generator().manual_seed(0)) * 3
    top = TopKProbs.from_logits(logits, k=4)
    assert (top.k, top.num_frames) == (4, 2)
    assert top.classes.shape == top.probs.shape == (2, 4, 4, 5)
    assert top.classes.dtype == torch.uint8 and top.probs.dtype == torch.float16
    # Slow reference: float64 softmax, a full stable sort, the first k.
    soft = torch.softmax(logits.double(), dim=1)
    values, indices = torch.sort(soft, dim=1, descending=True, stable=True)
    torch.testing.assert_close(top.classes.long(), indices[:, :4])
    torch.testing.assert_close(top.probs.double(), values[:, :4], atol=1e-3, rtol=0)
    assert (top.probs[:, 1:] <= top.probs[:, :-1]).all()
    moved = top.to("cpu")
    assert isinstance(moved, TopKProbs) and torch.equal(moved.classes, top.classes)
    with pytest.raises(ValueError, match="k must be"):
        TopKProbs.from_logits(logits, k=10)
    with pytest.raises(ValueError, match="uint8"):
        TopKProbs(top.classes.long(), top.probs)


def test_lightning_moves_topk_probs_with_the_batch() -> None:
    from lightning.fabric.utilities import move_data_to_device

    top = TopKProbs.from_logits(torch.zeros(1, 3, 2, 2), k=2)
    moved = move_data_to_device({"probs": {"m": top}}, torch.device("cpu"))
    assert isinstance(moved["probs"]["m"], TopKProbs)


# (what to write, the field the message must name)
def _write(arrays: dict[str, np.ndarray]) -> Callable[[Path], None]:
    return lambda path: np.savez(path, **arrays)


def _modified(change: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        classes, probs = valid_frame()
        np.savez(path, **change(classes.copy(), probs.copy()))

    return write


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _set(array: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    array[index] = value
    return array


BAD_FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage": (lambda path: path.write_bytes(b"not a zip file at all"), "cannot read"),
    "empty": (lambda path: path.write_bytes(b""), "cannot read"),
    "truncated": (
        lambda path: (write_prob_frame(path, *valid_frame()), path.write_bytes(path.read_bytes()[:60])),
        "cannot read",
    ),
    "single_array": (lambda path: path.write_bytes(_npy_bytes(valid_frame()[1])), "single .npy array"),
    "missing_probs": (_modified(lambda c, p: {"classes": c}), "'probs'"),
    "missing_classes": (_modified(lambda c, p: {"probs": p}), "'classes'"),
    "float32_probs": (_modified(lambda c, p: {"classes": c, "probs": p.astype(np.float32)}), "'probs' must be float16"),
    "int64_classes": (_modified(lambda c, p: {"classes": c.astype(np.int64), "probs": p}), "'classes' must be uint8"),
    "2d_probs": (_modified(lambda c, p: {"classes": c, "probs": p[0]}), "'probs' must be (k, H, W)"),
    "shapes_differ": (_modified(lambda c, p: {"classes": c[:2], "probs": p}), "'classes' is"),
    "wrong_size": (_modified(lambda c, p: {"classes": c[:, :-1], "probs": p[:, :-1]}), "'probs' is 5x7"),
    "id_too_large": (_modified(lambda c, p: {"classes": _set(c, (1, 2, 3), C), "probs": p}), "'classes' has ids"),
    "repeated_id": (
        _modified(lambda c, p: {"classes": _set(c, (2, 0, 0), c[0, 0, 0]), "probs": p}),
        "'classes' repeats",
    ),
    "nan": (_modified(lambda c, p: {"classes": c, "probs": _set(p, (2, 1, 1), np.nan)}), "'probs' has NaN"),
    "negative": (_modified(lambda c, p: {"classes": c, "probs": _set(p, (2, 1, 1), -0.1)}), "'probs' has values"),
    "above_one": (
        _modified(lambda c, p: {"classes": c, "probs": _set(_set(p, (0, 1, 1), 1.5), (1, 1, 1), 0)}),
        "'probs' has values",
    ),
    "increasing": (_modified(lambda c, p: {"classes": c, "probs": _set(p, (1, 3, 4), 0.9)}), "'probs' increases"),
    "sum_above_one": (
        _modified(lambda c, p: {"classes": c, "probs": np.full_like(p, 0.34)}),
        "'probs' sums above",
    ),
    "other_k": (_modified(lambda c, p: {"classes": c[:2], "probs": p[:2]}), "k=2"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_raises_naming_file_and_field(tmp_path: Path, case: str) -> None:
    write, field = BAD_FILES[case]
    path = tmp_path / f"00003{PROB_SUFFIX}"
    write(path)
    with pytest.raises(DataError) as info:
        read_prob_frame(path, C, (H, W), k=K)
    assert str(path) in str(info.value) and info.value.path == path
    assert field in str(info.value)


def test_sums_within_float16_rounding_are_accepted(tmp_path: Path) -> None:
    classes, _ = valid_frame()
    probs = np.full((K, H, W), 1 / 3 + 2e-3, dtype=np.float16)  # sums to 1.006
    read_prob_frame(write_prob_frame(tmp_path / "a.npz", classes, probs), C, (H, W))


def test_missing_file_and_header_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is missing"):
        read_prob_frame(tmp_path / "none.npz", C, (H, W))
    with pytest.raises(DataError, match="is missing"):
        read_prob_k(tmp_path / "none.npz")
    np.savez(tmp_path / "noprobs.npz", classes=valid_frame()[0])
    with pytest.raises(DataError, match="no 'probs'") as info:
        read_prob_k(tmp_path / "noprobs.npz")
    assert str(tmp_path / "noprobs.npz") in str(info.value)


# ------------------------------------------------------------------------------ streaming


@pytest.fixture(scope="module")
def prob_folders(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Probability folders of two of the three simulated models of the tiny synthetic dataset."""
    out = tmp_path_factory.mktemp("probabilities")
    return {
        model: write_probabilities(
            synthetic_root / "vspw", synthetic_root / "predictions" / "vspw" / model, out / model, "val", seed=1
        )
        for model in ("sim_boundary", "sim_strong")
    }


def pred_roots(synthetic_root: Path, layout: str = "vspw") -> dict[str, str]:
    return {model: str(synthetic_root / "predictions" / layout / model) for model in MODELS}


def test_chunks_carry_the_files_probabilities(synthetic_root: Path, prob_folders: dict[str, Path]) -> None:
    dm = VSPWDataModule(
        str(synthetic_root / "vspw"),
        pred_roots=pred_roots(synthetic_root),
        prob_roots={model: str(folder) for model, folder in prob_folders.items()},
        clip_len=8,
        load_frames=False,
    )
    dm.setup("test")
    assert dm.prob_k == {"sim_strong": K, "sim_boundary": K}
    frames = 0
    for batch in dm.test_dataloader():
        t, h, w = batch["gt"].shape
        assert list(batch["probs"]) == ["sim_strong", "sim_boundary"]  # prediction-method order
        for model, top in batch["probs"].items():
            assert isinstance(top, TopKProbs) and top.classes.shape == top.probs.shape == (t, K, h, w)
            for index, frame_id in enumerate(batch["frame_ids"]):
                with np.load(prob_folders[model] / batch["video"] / f"{frame_id}{PROB_SUFFIX}") as npz:
                    np.testing.assert_array_equal(top.classes[index].numpy(), npz["classes"])
                    np.testing.assert_array_equal(top.probs[index].numpy(), npz["probs"])
            # The simulated model's top-1 is its prediction.
            assert torch.equal(top.classes[:, 0], batch["preds"][model])
        frames += t
    assert frames == dm.index("val").num_frames


def test_vipseg_module_passes_prob_roots_through(synthetic_root: Path, prob_folders: dict[str, Path]) -> None:
    dm = VIPSegDataModule(
        str(synthetic_root / "vipseg"),
        pred_roots=pred_roots(synthetic_root, "vipseg"),
        prob_roots={"sim_strong": str(prob_folders["sim_strong"])},
        clip_len=32,
        load_frames=False,
        max_videos=1,
    )
    (batch,) = list(dm.test_dataloader())
    assert list(batch["probs"]) == ["sim_strong"] and batch["probs"]["sim_strong"].num_frames == len(batch["gt"])


def test_prob_roots_must_name_prediction_methods(synthetic_root: Path, prob_folders: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="sim_other"):
        VSPWDataModule(
            str(synthetic_root / "vspw"),
            pred_roots=pred_roots(synthetic_root),
            prob_roots={"sim_other": str(prob_folders["sim_strong"])},
        )


@pytest.fixture
def copied_probs(prob_folders: dict[str, Path], tmp_path: Path) -> Path:
    """A writable copy of one probability folder."""
    return Path(shutil.copytree(prob_folders["sim_strong"], tmp_path / "sim_strong"))


def strong_module(synthetic_root: Path, probs: Path, **kwargs) -> VSPWDataModule:
    return VSPWDataModule(
        str(synthetic_root / "vspw"),
        pred_roots={"sim_strong": str(synthetic_root / "predictions" / "vspw" / "sim_strong")},
        prob_roots={"sim_strong": str(probs)},
        load_frames=False,
        **kwargs,
    )


def test_missing_prob_file_is_an_index_time_problem(synthetic_root: Path, copied_probs: Path) -> None:
    videos = synthetic.read_split(synthetic_root / "vspw", "val")
    missing = sorted((copied_probs / videos[1]).iterdir())[5]
    missing.unlink()
    with pytest.raises(DataError, match="probabilities of method 'sim_strong' missing") as info:
        strong_module(synthetic_root, copied_probs).setup("test")
    assert str(missing) in str(info.value)

    dm = strong_module(synthetic_root, copied_probs, skip_bad_videos=True)
    with pytest.warns(UserWarning, match="skipping"):
        dm.setup("test")
    assert [video for video, _ in dm.skipped] == [videos[1]] and str(missing) in dm.skipped[0][1]
    assert {batch["video"] for batch in dm.test_dataloader()} == set(videos) - {videos[1]}

    shutil.rmtree(copied_probs / videos[1])
    with pytest.raises(DataError, match="probability folder .* does not exist"):
        strong_module(synthetic_root, copied_probs).setup("test")


def test_bad_prob_file_raises_at_load_or_is_skipped_by_prevalidation(synthetic_root: Path, copied_probs: Path) -> None:
    videos = synthetic.read_split(synthetic_root / "vspw", "val")
    bad = sorted((copied_probs / videos[1]).iterdir())[2]
    classes, probs = read_prob_frame(bad, C, (48, 64))
    np.savez(bad, classes=classes[:2], probs=probs[:2])  # k=2 in a k=3 folder
    with pytest.raises(DataError, match="the folder's k is 3") as info:
        list(strong_module(synthetic_root, copied_probs, skip_bad_videos=True, clip_len=4).test_dataloader())
    assert str(bad) in str(info.value)

    dm = strong_module(synthetic_root, copied_probs, skip_bad_videos=True, prevalidate=True)
    with pytest.warns(UserWarning, match="skipping"):
        dm.setup("test")
    assert [video for video, _ in dm.skipped] == [videos[1]] and str(bad) in dm.skipped[0][1]


# ------------------------------------------------------------------------------ simulated models


@pytest.fixture(scope="module")
def simulated() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(model, gt, pred, classes, probs) of one small synthetic video per model."""
    config = synthetic.SyntheticConfig(height=60, width=96, seed=3)
    video = synthetic.generate_video(synthetic.video_rng(3, "video"), config, num_frames=12)
    gt = video.eval_labels  # (T, H, W) uint8
    out = []
    for model in MODELS:
        pred = synthetic.simulate_prediction(gt, model, synthetic.video_rng(3, "prediction", model))
        classes, probs = simulate_probabilities(gt, pred, np.random.default_rng(7))
        out.append((model, gt, pred, classes, probs))
    return out


def test_simulated_probabilities_are_valid_and_seeded(simulated, tmp_path: Path) -> None:
    for model, gt, pred, classes, probs in simulated:
        assert classes.shape == probs.shape == (gt.shape[0], K, *gt.shape[1:])
        np.testing.assert_array_equal(classes[:, 0], pred)
        for index in (0, len(gt) - 1):
            path = write_prob_frame(tmp_path / f"{model}{index}.npz", classes[index], probs[index])
            read_prob_frame(path, C, gt.shape[1:], k=K)
        again = simulate_probabilities(gt, pred, np.random.default_rng(7))
        np.testing.assert_array_equal(again[0], classes)
        np.testing.assert_array_equal(again[1], probs)
    _, gt, pred, _, _ = simulated[0]
    for k in (1, 5):
        classes, probs = simulate_probabilities(gt[:2], pred[:2], np.random.default_rng(0), k=k)
        assert classes.shape[1] == k
        read_prob_frame(write_prob_frame(tmp_path / f"k{k}.npz", classes[1], probs[1]), C, gt.shape[1:], k=k)


def test_simulated_confidence_is_lower_where_wrong_and_gt_is_often_second(simulated) -> None:
    for model, gt, pred, classes, probs in simulated:
        valid = gt != 255
        wrong, right = valid & (pred != gt), valid & (pred == gt)
        top1 = probs[:, 0].astype(np.float32)
        assert top1[right].mean() > 0.9 and top1[wrong].mean() < 0.7, model
        share = (classes[:, 1] == gt)[wrong].mean()
        assert 0.4 < share < 0.99, (model, share)


def test_probability_vote_recovers_a_mostly_wrong_region_but_not_a_wholly_wrong_one() -> None:
    """In a region 60 % wrong, the right 40 % is confident and the GT is often second on the
    rest: summed probabilities pick the GT, a hard majority the mistake. Wholly wrong: neither."""
    gt = np.zeros((4, 40, 60), dtype=np.uint8)
    gt[:, 10:30, 10:50] = 5
    pred = gt.copy()
    pred[:, 10:30, 10:34] = 7  # 24 of 40 columns of the object wrong
    pred[:, 10:30, 50:] = 9  # background right of the object wrong too, wholly
    classes, probs = simulate_probabilities(gt, pred, np.random.default_rng(0))

    def votes(region: np.ndarray) -> np.ndarray:
        total = np.zeros(C)
        for rank in range(K):
            np.add.at(total, classes[:, rank][region], probs[:, rank][region].astype(np.float64))
        return total

    region = gt == 5
    assert np.bincount(pred[region]).argmax() == 7
    assert votes(region).argmax() == 5
    wholly = np.zeros_like(region)
    wholly[:, 12:28, 52:] = True
    assert votes(wholly).argmax() == 9
