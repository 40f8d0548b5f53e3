"""Metrics against hand-computed answers and against the slow references in metric_reference.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from metric_reference import (
    ref_boundary_band,
    ref_boundary_iou_class,
    ref_boundary_iou_image,
    ref_iou,
    ref_video_consistency,
)

from vssam2.metrics import BoundaryIoU, MetricConfig, SemanticIoU, VideoConsistency, VSSMetrics
from vssam2.metrics.functional import boundary_band, confusion_matrix, video_consistency_scores

IGNORE = 255


def t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.uint8)


def random_video(rng: np.random.Generator, frames: int, h: int, w: int, num_classes: int, flip: float = 0.05):
    """Piecewise-constant GT that changes slowly (so windows have stable pixels) and a noisy prediction."""
    base = rng.integers(0, num_classes, size=(h // 4 + 1, w // 4 + 1))
    gt = np.repeat(np.repeat(base, 4, 0), 4, 1)[:h, :w]
    gts, preds = [], []
    for _ in range(frames):
        gt = gt.copy()
        change = rng.random(gt.shape) < 0.01
        gt[change] = rng.integers(0, num_classes, size=change.sum())
        g = gt.copy()
        g[rng.random(g.shape) < 0.03] = IGNORE
        p = gt.copy()
        noise = rng.random(p.shape) < flip
        p[noise] = rng.integers(0, num_classes, size=noise.sum())
        p[rng.random(p.shape) < 0.01] = IGNORE  # "no prediction"
        gts.append(g)
        preds.append(p)
    return np.stack(preds).astype(np.uint8), np.stack(gts).astype(np.uint8)


# ---------------------------------------------------------------- IoU


def test_iou_hand_case():
    # GT: class 0 on 3 pixels, class 1 on 1 pixel; one ignore pixel predicted as 1 (never counted).
    gt = t([[0, 0, 0, 1, IGNORE]])
    pred = t([[0, 0, 1, 1, 1]])
    m = SemanticIoU(num_classes=3)
    m.update(pred, gt)
    out = m.compute()
    # class 0: TP 2, FN 1, FP 0 → 2/3; class 1: TP 1, FP 1 → 1/2; class 2 absent → NaN.
    assert out["per_class_iou"][0].item() == pytest.approx(2 / 3)
    assert out["per_class_iou"][1].item() == pytest.approx(1 / 2)
    assert math.isnan(out["per_class_iou"][2].item())
    assert out["mIoU"].item() == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["WIoU"].item() == pytest.approx(3 / 4 * 2 / 3 + 1 / 4 * 1 / 2)


def test_no_prediction_is_wrong_but_no_false_positive():
    gt = t([[0, 0, 1, 1]])
    pred = t([[0, IGNORE, 1, 1]])
    cm = confusion_matrix(pred, gt, 2)
    assert cm.tolist() == [[1, 0, 1], [0, 2, 0]]
    m = SemanticIoU(num_classes=2)
    m.update(pred, gt)
    out = m.compute()
    assert out["per_class_iou"].tolist() == pytest.approx([0.5, 1.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_matches_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    preds, gts = random_video(rng, 6, 23, 31, 7)
    m = SemanticIoU(num_classes=7)
    for p, g in zip(preds, gts):
        m.update(t(p), t(g))
    out = m.compute()
    miou, fwiou, iou = ref_iou(list(preds), list(gts), 7)
    assert out["mIoU"].item() == pytest.approx(miou, abs=1e-12)
    assert out["WIoU"].item() == pytest.approx(fwiou, abs=1e-12)
    np.testing.assert_allclose(out["per_class_iou"].numpy(), iou, atol=1e-12)


# ---------------------------------------------------------------- boundary IoU


def test_boundary_hand_case():
    # Left half class 0, right half class 1; width 1 → band is the two middle columns.
    gt = np.zeros((3, 10), dtype=np.uint8)
    gt[:, 5:] = 1
    band = boundary_band(t(gt)[None], width=1)[0].numpy()
    expected = np.zeros_like(band)
    expected[:, 4:6] = True
    np.testing.assert_array_equal(band, expected)
    pred = gt.copy()
    pred[:, 5] = 0  # wrong on one band column
    m = BoundaryIoU(num_classes=2, width=1)
    m.update(t(pred), t(gt))
    # agree = 3 (column 4), |B| = 6 → 3 / (12 − 3)
    assert m.compute().item() == pytest.approx(3 / 9)


def test_border_is_not_a_boundary_and_uniform_images_are_skipped():
    gt = np.zeros((8, 8), dtype=np.uint8)
    assert not boundary_band(t(gt)[None], width=3).any()
    m = BoundaryIoU(num_classes=2, width=2)
    m.update(t(gt), t(gt))
    assert math.isnan(m.compute().item())
    gt2 = gt.copy()
    gt2[3:5, 3:5] = 1
    m.update(t(gt2), t(gt2))  # a perfect prediction on the one image with a band
    assert m.compute().item() == pytest.approx(1.0)


def test_ignore_pixels_are_never_in_the_band_but_border_it():
    gt = np.zeros((5, 9), dtype=np.uint8)
    gt[:, 4] = IGNORE
    band = boundary_band(t(gt)[None], width=1)[0].numpy()
    assert not band[:, 4].any()
    assert band[:, 3].all() and band[:, 5].all()
    assert not band[:, :3].any()


@pytest.mark.parametrize("width", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_boundary_band_matches_iterated_erosion(width, seed):
    rng = np.random.default_rng(seed)
    _, gts = random_video(rng, 3, 29, 37, 5)
    ours = boundary_band(t(gts), width).numpy()
    for k in range(len(gts)):
        np.testing.assert_array_equal(ours[k], ref_boundary_band(gts[k], width))


@pytest.mark.parametrize("width", [1, 3, 5])
@pytest.mark.parametrize("shape", [(2, 29, 37), (1, 3, 4), (2, 12, 1)])
def test_boundary_band_compiled_path_equals_torch_path(width, shape):
    """uint8 on the CPU goes through the compiled bit-parallel band (when built); other dtypes
    through the torch path."""
    rng = np.random.default_rng(width)
    gts = rng.integers(0, 4, size=shape).astype(np.uint8)
    gts[rng.random(shape) < 0.1] = IGNORE
    compiled = boundary_band(t(gts), width)
    torch_path = boundary_band(torch.from_numpy(gts).long(), width)
    assert torch.equal(compiled, torch_path)
    for k in range(shape[0]):
        np.testing.assert_array_equal(compiled[k].numpy(), ref_boundary_band(gts[k], width))


@pytest.mark.parametrize("mode", ["image", "class"])
@pytest.mark.parametrize("seed", [0, 1])
def test_boundary_iou_matches_reference(mode, seed):
    rng = np.random.default_rng(seed)
    preds, gts = random_video(rng, 5, 31, 41, 6, flip=0.2)
    m = BoundaryIoU(num_classes=6, width=3, mode=mode)
    for p, g in zip(preds, gts):
        m.update(t(p), t(g))
    if mode == "image":
        expected = ref_boundary_iou_image(list(preds), list(gts), 3)
    else:
        expected = ref_boundary_iou_class(list(preds), list(gts), 6, 3)
    assert m.compute().item() == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- video consistency


def test_video_consistency_hand_case():
    # 4 frames, 2 pixels, n = 2. Pixel 0: GT stable, pred changes between frames 1 and 2.
    # Pixel 1: GT changes between frames 0 and 1, afterwards stable.
    gt = np.array([[[0, 0]], [[0, 1]], [[0, 1]], [[0, 1]]], dtype=np.uint8)  # (4, 1, 2)
    pred = np.array([[[0, 0]], [[0, 1]], [[1, 1]], [[1, 1]]], dtype=np.uint8)
    # windows (0,1): GT-stable {p0}, pred p0 stable → 1/1
    # windows (1,2): GT-stable {p0, p1}, pred p0 unstable, p1 stable → 1/2
    # windows (2,3): GT-stable {p0, p1}, both pred stable → 2/2
    scores = video_consistency_scores(t(pred), t(gt), n=2, windows="paper")
    assert scores.tolist() == pytest.approx([1.0, 0.5, 1.0])
    scripts = video_consistency_scores(t(pred), t(gt), n=2, windows="scripts")
    assert scripts.tolist() == pytest.approx([1.0, 0.5])  # the last window is not counted
    m = VideoConsistency(n=2)
    m.update(t(pred), t(gt), video="v", start=0, last=True)
    assert m.compute().item() == pytest.approx(0.75)
    m_paper = VideoConsistency(n=2, windows="paper")
    m_paper.update(t(pred), t(gt), video="v", start=0, last=True)
    assert m_paper.compute().item() == pytest.approx(2.5 / 3)


def test_video_consistency_ignore_is_not_masked_and_short_videos_give_no_window():
    gt = np.full((3, 2, 2), IGNORE, dtype=np.uint8)
    pred = np.zeros((3, 2, 2), dtype=np.uint8)
    pred[1] = 1
    m = VideoConsistency(n=2, windows="paper")
    m.update(t(pred), t(gt), video="v", last=True)
    assert m.compute().item() == pytest.approx(0.0)  # GT (all ignore) is stable, pred is not
    short = VideoConsistency(n=8)
    short.update(t(pred), t(gt), video="s", last=True)
    assert math.isnan(short.compute().item())


@pytest.mark.parametrize("windows", ["scripts", "paper"])
@pytest.mark.parametrize("n", [2, 3, 8])
def test_video_consistency_matches_script_reference(n, windows):
    rng = np.random.default_rng(n)
    videos = [random_video(rng, frames, 13, 17, 3, flip=0.02) for frames in (n - 1, n, n + 1, 2 * n + 3, 21)]
    m = VideoConsistency(n=n, windows=windows, num_classes=3)
    for k, (p, g) in enumerate(videos):
        m.update(t(p), t(g), video=f"v{k}", start=0, last=True)
    expected = ref_video_consistency([p for p, _ in videos], [g for _, g in videos], n, windows)
    assert m.compute().item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("windows", ["scripts", "paper"])
def test_several_window_lengths_share_one_pass_and_match_the_reference(windows):
    """One metric for n = 16, 2, 8 (one run-length state capped at 15) equals the script per n,
    whatever the chunking, the order of the lengths and the videos shorter than some n."""
    rng = np.random.default_rng(11)
    videos = [random_video(rng, frames, 9, 14, 3, flip=0.02) for frames in (5, 9, 16, 17, 30)]
    lengths = (16, 2, 8)
    m = VideoConsistency(n=lengths, windows=windows, num_classes=3)
    for k, (p, g) in enumerate(videos):
        cuts = [0, *sorted(rng.choice(np.arange(1, len(p)), size=min(3, len(p) - 1), replace=False)), len(p)]
        for a, b in zip(cuts[:-1], cuts[1:]):
            m.update(t(p[a:b]), t(g[a:b]), video=f"v{k}", start=int(a), last=b == len(p))
    values = m.compute()
    assert list(values) == list(lengths)
    for n in lengths:
        expected = ref_video_consistency([p for p, _ in videos], [g for _, g in videos], n, windows)
        assert values[n].item() == pytest.approx(expected, abs=1e-12), n


@pytest.mark.parametrize("n", [2, 256])
def test_run_lengths_saturate_on_long_stable_videos(n):
    """300 frames: the per-pixel run counters (bytes, capped at n − 1) must not wrap."""
    rng = np.random.default_rng(n)
    gt = np.repeat(rng.integers(0, 3, size=(1, 3, 4)), 300, axis=0).astype(np.uint8)
    pred = gt.copy()
    pred[150, 0, 0] = (pred[150, 0, 0] + 1) % 3  # one flicker: windows over frame 150 lose a pixel
    for windows in ("scripts", "paper"):
        m = VideoConsistency(n=n, windows=windows, num_classes=3)
        m.update(t(pred[:100]), t(gt[:100]), video="v", start=0)
        m.update(t(pred[100:]), t(gt[100:]), video="v", start=100, last=True)
        expected = ref_video_consistency([pred], [gt], n, windows)
        assert m.compute().item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("windows", ["scripts", "paper"])
@pytest.mark.parametrize("chunks", [[1] * 23, [3, 5, 7, 8], [16, 7], [23], [2, 1, 20]])
def test_streaming_chunks_equal_whole_video(chunks, windows):
    rng = np.random.default_rng(7)
    pred, gt = random_video(rng, 23, 11, 13, 3, flip=0.03)
    pred2, gt2 = random_video(rng, 19, 11, 13, 3, flip=0.03)
    whole = VSSMetrics(MetricConfig(num_classes=3, vc_windows=windows, boundary_width=2))
    whole.update(t(pred), t(gt), video="a", last=True)
    whole.update(t(pred2), t(gt2), video="b", last=True)
    streamed = VSSMetrics(MetricConfig(num_classes=3, vc_windows=windows, boundary_width=2))
    # Interleave the chunks of two videos, as DataLoader workers do.
    start = 0
    for k, length in enumerate(chunks):
        end = start + length
        streamed.update(t(pred[start:end]), t(gt[start:end]), video="a", start=start, last=end == len(gt))
        if k == 0:
            streamed.update(t(pred2), t(gt2), video="b", start=0, last=True)
        start = end
    a, b = whole.compute(), streamed.compute()
    for name in ("mIoU", "WIoU", "mBIoU", "mVC8", "mVC16"):
        assert torch.equal(a[name], b[name]) or (a[name].isnan() and b[name].isnan()), name


def test_collection_names_and_reference_values():
    rng = np.random.default_rng(3)
    videos = [random_video(rng, 20, 16, 20, 4, flip=0.02) for _ in range(3)]
    m = VSSMetrics(MetricConfig(num_classes=4))
    for k, (p, g) in enumerate(videos):
        m.update(t(p), t(g), video=str(k), last=True)
    out = m.compute()
    assert list(out) == ["mIoU", "WIoU", "mBIoU", "mVC8", "mVC16", "per_class_iou"]
    preds = [f for p, _ in videos for f in p]
    gts = [f for _, g in videos for f in g]
    miou, fwiou, _ = ref_iou(preds, gts, 4)
    assert out["mIoU"].item() == pytest.approx(miou, abs=1e-12)
    assert out["WIoU"].item() == pytest.approx(fwiou, abs=1e-12)
    assert out["mBIoU"].item() == pytest.approx(ref_boundary_iou_image(preds, gts, 5), abs=1e-12)
    for n in (8, 16):
        ref = ref_video_consistency([p for p, _ in videos], [g for _, g in videos], n)
        assert out[f"mVC{n}"].item() == pytest.approx(ref, abs=1e-12)
    m.reset()
    assert math.isnan(m.compute()["mIoU"].item())


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    gt = t(np.zeros((2, 4, 4)))
    m = VSSMetrics(MetricConfig(num_classes=3))
    with pytest.raises(ValueError, match="shapes differ"):
        m.update(t(np.zeros((2, 4, 5))), gt, video="v")
    with pytest.raises(ValueError, match=r"preds: label ids out of range.*\[7\]"):
        m.update(t(np.full((2, 4, 4), 7)), gt, video="v")
    with pytest.raises(ValueError, match="target: label ids out of range"):
        m.update(gt, t(np.full((2, 4, 4), 3)), video="v")
    with pytest.raises(TypeError, match="integer label ids"):
        m.update(torch.zeros(2, 4, 4), gt, video="v")
    with pytest.raises(ValueError, match=r"shape \(N, H, W\)"):
        m.update(t(np.zeros((1, 2, 4, 4))), t(np.zeros((1, 2, 4, 4))), video="v")


def test_chunks_out_of_order_raise():
    vc = VideoConsistency(n=2)
    x = t(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="chunk starts at frame 3 but frame 0 was expected"):
        vc.update(x, x, video="v", start=3)
    vc.update(x, x, video="v", start=0)
    with pytest.raises(ValueError, match="frame 3 was expected"):
        vc.update(x, x, video="v", start=2)
    with pytest.raises(ValueError, match="frame size changed"):
        vc.update(t(np.zeros((3, 5, 4))), t(np.zeros((3, 5, 4))), video="v", start=3)
    vc.update(x, x, video="v", start=3, last=True)
    with pytest.raises(ValueError, match="after its last chunk"):
        vc.update(x, x, video="v", start=6)
    with pytest.raises(RuntimeError, match="no per-batch value"):
        vc(x, x, video="w")


def test_refused_chunk_updates_no_metric_of_the_collection():
    """A chunk out of order (or of another frame size) is refused before any metric of the
    collection takes it: IoU, boundary and consistency states all stay as they were."""
    rng = np.random.default_rng(2)
    preds, gts = random_video(rng, 6, 12, 14, 4, flip=0.1)
    metrics = VSSMetrics(MetricConfig(num_classes=4, vc_lengths=(2,)))
    metrics.update(t(preds[:3]), t(gts[:3]), video="v", start=0)
    before = {name: value.clone() for name, value in metrics.compute().items()}
    confmat, scores = metrics.iou.confmat.clone(), len(metrics.boundary.scores)
    with pytest.raises(ValueError, match="frame 3 was expected"):
        metrics.update(t(preds[3:]), t(gts[3:]), video="v", start=4)
    with pytest.raises(ValueError, match="frame size changed"):
        metrics.update(t(preds[3:, :5]), t(gts[3:, :5]), video="v", start=3)
    assert torch.equal(metrics.iou.confmat, confmat) and len(metrics.boundary.scores) == scores
    after = metrics.compute()
    assert all(torch.equal(after[name].nan_to_num(-1), before[name].nan_to_num(-1)) for name in before)
    metrics.update(t(preds[3:]), t(gts[3:]), video="v", start=3, last=True)  # the right chunk still goes in


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="windows"):
        VideoConsistency(n=8, windows="both")
    with pytest.raises(ValueError, match="2 <= n <= 256"):
        VideoConsistency(n=1)
    with pytest.raises(ValueError, match="2 <= n <= 256"):
        VideoConsistency(n=257)
    with pytest.raises(ValueError, match="2 <= n <= 256"):
        VideoConsistency(n=(8, 300))
    with pytest.raises(ValueError, match="at least one"):
        VideoConsistency(n=())
    with pytest.raises(ValueError, match="mode"):
        BoundaryIoU(mode="pixel")
    with pytest.raises(ValueError, match="width"):
        BoundaryIoU(width=0)


def test_confusion_matrix_fast_uint8_path_equals_general_path():
    rng = np.random.default_rng(5)
    preds, gts = random_video(rng, 4, 17, 19, 9, flip=0.3)
    fast = confusion_matrix(t(preds), t(gts), 9)
    general = confusion_matrix(torch.from_numpy(preds).long(), torch.from_numpy(gts).long(), 9)
    assert torch.equal(fast, general)
    assert fast.sum() == int((gts != IGNORE).sum())


@pytest.mark.parametrize("windows", ["scripts", "paper"])
def test_torch_kernels_equal_host_kernels(monkeypatch, windows):
    """The torch code that scores CUDA tensors, run here on CPU tensors, gives the numbers of the
    host kernels (compiled and numpy), chunk by chunk (confusion matrix, band, run-length state)."""
    import vssam2.metrics.functional as functional

    rng = np.random.default_rng(3)
    videos = [random_video(rng, frames, 21, 26, 5, flip=0.04) for frames in (9, 20)]

    def score() -> dict[str, float]:
        metrics = VSSMetrics(MetricConfig(num_classes=5, vc_windows=windows, boundary_width=2, vc_lengths=(2, 8)))
        for k, (pred, gt) in enumerate(videos):
            for a in range(0, len(gt), 6):
                metrics.update(t(pred[a : a + 6]), t(gt[a : a + 6]), video=f"v{k}", start=a, last=a + 6 >= len(gt))
        out = metrics.compute()
        return {name: value.tolist() for name, value in out.items()}

    host = score()
    monkeypatch.setattr(functional, "host_kernels", lambda x: False)
    monkeypatch.setattr(functional, "compiled_kernels", lambda x: False)
    assert score() == host
