"""Window signatures give the exact mVC_n of any per-masklet decision (vssam2.fusion.consistency)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vssam2.fusion.consistency import SignatureBuilder, WindowSignatures, consistency_gains, window_scores
from vssam2.fusion.gains import masklet_rows
from vssam2.metrics.functional import consistency_window_counts, video_consistency_scores


def _video(seed: int, frames: int = 21, size: tuple[int, int] = (12, 14)):
    """Blocky GT and base that are mostly stable, masklets that split and move, a few ignore pixels."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    gt = torch.randint(0, 4, (1, h // 2, w // 2), generator=g).repeat_interleave(2, 1).repeat_interleave(2, 2)
    gt = gt.repeat(frames, 1, 1)
    flip = torch.rand(frames, h, w, generator=g) < 0.05
    gt = torch.where(flip, torch.randint(0, 4, (frames, h, w), generator=g), gt)
    gt[torch.rand(frames, h, w, generator=g) < 0.02] = 255
    base = torch.where(torch.rand(frames, h, w, generator=g) < 0.2, (gt + 1) % 4, gt)
    base[torch.rand(frames, h, w, generator=g) < 0.02] = 255
    segments = torch.zeros(frames, h, w, dtype=torch.int64)
    for t in range(frames):
        shift = t // 3
        segments[t, :, : w // 2] = 1 + (torch.arange(h)[:, None] + shift >= h // 2).long()
        segments[t, : h // 2, w // 2 + 2 :] = 3 + (t % 5 == 0)
    return segments, base.to(torch.uint8), gt.to(torch.uint8)


def _signatures(segments, base, gt, n, clip):
    """Signatures with rows per chunk, as the statistics cache numbers them."""
    builder, offset, chunk_rows = SignatureBuilder(n), 0, []
    for start in range(0, segments.shape[0], clip):
        seg = segments[start : start + clip]
        ids = torch.unique(seg[seg > 0])
        rows = masklet_rows(seg, ids)
        builder.add(torch.where(rows >= 0, rows + offset, rows), base[start : start + clip], gt[start : start + clip])
        chunk_rows.append(torch.where(rows >= 0, rows + offset, rows))
        offset += int(ids.numel())
    return builder.result(), torch.cat(chunk_rows), offset


def _painted(rows, base, paint):
    values = torch.where(rows >= 0, paint[rows.clamp(min=0)], torch.full_like(rows, -1))
    return torch.where(values >= 0, values, base.long())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n,clip", [(8, 5), (8, 32), (4, 3), (2, 7)])
@pytest.mark.parametrize("windows", ["scripts", "paper"])
def test_window_scores_equal_the_metric_on_painted_maps(seed, n, clip, windows):
    segments, base, gt = _video(seed)
    signatures, rows, num = _signatures(segments, base, gt, n, clip)
    g = torch.Generator().manual_seed(100 + seed)
    decisions = [
        torch.full((num,), -1, dtype=torch.int64),  # the base
        torch.randint(0, 4, (num,), generator=g),  # paint everything
        torch.where(torch.rand(num, generator=g) < 0.5, torch.randint(0, 4, (num,), generator=g), -1),
    ]
    for paint in decisions:
        got = window_scores(signatures, paint, windows)
        want = video_consistency_scores(_painted(rows, base, paint), gt.long(), n, windows).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)


def test_chunking_does_not_change_the_scores():
    segments, base, gt = _video(3)
    # one masklet numbering for both (whole-video rows), chunked differently
    ids = torch.unique(segments[segments > 0])
    rows = masklet_rows(segments, ids)
    whole, parts = SignatureBuilder(8), SignatureBuilder(8)
    whole.add(rows, base, gt)
    for start in range(0, segments.shape[0], 4):
        parts.add(rows[start : start + 4], base[start : start + 4], gt[start : start + 4])
    paint = torch.tensor([2, -1, 0, 1])
    np.testing.assert_array_equal(window_scores(whole.result(), paint), window_scores(parts.result(), paint))


def test_arrays_round_trip_and_short_videos():
    segments, base, gt = _video(4, frames=5)
    signatures, _, num = _signatures(segments, base, gt, 8, 32)
    assert signatures.stable.shape == (0,) and window_scores(signatures, torch.full((num,), -1)).shape == (0,)
    again = WindowSignatures.from_arrays(signatures.to_arrays())
    assert set(signatures.to_arrays()) == set(WindowSignatures.ARRAYS)
    np.testing.assert_array_equal(again.rows, signatures.rows)
    with pytest.raises(ValueError, match="≥ 2 frames"):
        SignatureBuilder(1)
    with pytest.raises(ValueError, match="windows must be"):
        window_scores(signatures, torch.zeros(num, dtype=torch.int64), "every")  # type: ignore[arg-type]


def test_consistency_gains_equal_painting_one_masklet_alone():
    segments, base, gt = _video(5, frames=13)
    signatures, rows, num = _signatures(segments, base, gt, 4, 6)
    g = torch.Generator().manual_seed(7)
    candidates = torch.randint(-1, 4, (num, 3), generator=g)
    candidates[:, 0] = candidates[:, 0].clamp(min=0)
    window_weight = np.linspace(0.5, 2.0, signatures.stable.shape[0])
    window_weight[-1] = 0.0  # a window that is not scored
    got = consistency_gains(signatures, candidates, window_weight).numpy()

    def weighted_stable(pred):
        both, _ = consistency_window_counts(pred, gt.long(), 4)
        return float((both.double().numpy() * window_weight).sum())

    reference = weighted_stable(base.long())
    want = np.zeros((num, 4))
    for m in range(num):
        for i in range(3):
            if candidates[m, i] < 0:
                continue
            paint = torch.full((num,), -1, dtype=torch.int64)
            paint[m] = candidates[m, i]
            want[m, 1 + i] = weighted_stable(_painted(rows, base, paint)) - reference
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert (got[:, 1:] != 0).any()  # the video has flicker to gain or lose


@pytest.mark.parametrize("stride,step", [(3, 1), (1, 2), (4, 3)])
@pytest.mark.parametrize("frames", [21, 22, 23])
def test_sampled_windows_and_pixels_score_the_sample(stride, step, frames):
    segments, base, gt = _video(6, frames=frames)
    ids = torch.unique(segments[segments > 0])
    rows = masklet_rows(segments, ids)
    builder = SignatureBuilder(8, stride=stride, pixel_step=step)
    for start in range(0, frames, 5):
        builder.add(rows[start : start + 5], base[start : start + 5], gt[start : start + 5])
    paint = torch.tensor([1, -1, 3, 0])
    pred = _painted(rows, base, paint)[:, ::step, ::step]
    for windows in ("scripts", "paper"):
        every = video_consistency_scores(pred, gt.long()[:, ::step, ::step], 8, "paper").numpy()
        kept = np.arange(every.shape[0])[::stride]
        if windows == "scripts":
            kept = kept[kept != every.shape[0] - 1]
        got = window_scores(builder.result(), paint, windows)
        np.testing.assert_allclose(got, every[kept], rtol=0, atol=1e-12, equal_nan=True)
    with pytest.raises(ValueError, match="stride and pixel_step"):
        SignatureBuilder(8, stride=0)
