"""mmseg's test-time resize of CFFM / MRCFA / TV3S, bit-exact, in torch (any device).

Those VSS models test on VSPW with ``AlignedResize_clips(keep_ratio=True, size_divisor=32)``
at ``img_scale=(853, 480)`` (``local_configs/_base_/datasets/vspw_repeat2.py`` in
GuoleiSun/VSS-CFFM; ``AlignedResize._align`` in its ``mmseg/datasets/pipelines/transforms.py``),
with mmcv 1.3's image functions:

1. ``mmcv.imrescale(img, img_scale)``: one scale factor ``s = min(long / max(h, w),
   short / min(h, w))`` with ``long, short = max(img_scale), min(img_scale)``, new size
   ``(int(w * s + 0.5), int(h * s + 0.5))`` (``mmcv.image.geometric._scale_size``), then
   ``mmcv.imresize``;
2. ``_align``: each side rounded up to a multiple of ``size_divisor``
   (``int(np.ceil(h / d)) * d``), then ``mmcv.imresize`` again;

where ``mmcv.imresize`` is ``cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)`` on the
uint8 image: each step rounds to uint8. A 480x853 frame becomes 480x864 (step 1 is the
identity), 720x1280 becomes 480x853 then 480x864, 480x1138 becomes 360x853 then 384x864.

:func:`cv2_linear_resize` reproduces OpenCV's ``INTER_LINEAR`` on uint8 exactly: OpenCV
(``modules/imgproc/src/resize.cpp``, ``hal::resize`` / ``resizeGeneric_``) samples source
position ``(d + 0.5) * scale - 0.5`` (``scale = 1 / (dst / src)`` in double, rounded to
float), quantises the two weights of each axis to 11 bits (``INTER_RESIZE_COEF_SCALE =
2048``, round half to even), interpolates rows in integers (``HResizeLinear``) and then
columns with ``VResizeLinear``'s fixed-point rounding ``(((b0 * (r0 >> 4)) >> 16) + ((b1 *
(r1 >> 4)) >> 16) + 2) >> 2``. Positions left of the first pixel take it with weight 1
horizontally and clamp the row index vertically (the weights stay as computed), positions
right of the last take the last pixel. An unchanged size is a copy. An exact 2x reduction
of both sides is OpenCV's ``INTER_AREA`` fast path instead, ``(a + b + c + d + 2) >> 2`` over
each 2x2 block, which is what the formula above gives there (weights 1024 and 1024).
Neither IPP nor OpenCV's HAL replaces this for 8-bit bilinear (their resize is not
bit-exact there, so OpenCV does not call them by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: CFFM / MRCFA / TV3S test scale on VSPW: mmcv's ``img_scale`` ``(long edge, short edge)``.
VSPW_IMG_SCALE: tuple[int, int] = (853, 480)
#: Their ``AlignedResize`` divisor (MiT's total stride).
VSPW_SIZE_DIVISOR: int = 32

# OpenCV's INTER_RESIZE_COEF_BITS = 11: bilinear weights are integers summing to 2048.
_COEF_SCALE = 2048


def mmcv_rescale_size(height: int, width: int, img_scale: Sequence[int]) -> tuple[int, int]:
    """``mmcv.rescale_size`` with a tuple scale: the largest size within ``img_scale``, ratio kept.

    Args:
        height: Frame height.
        width: Frame width.
        img_scale: mmcv's ``img_scale``: the long-edge and short-edge limits, in either order.

    Returns:
        ``(h, w)`` after ``mmcv.imrescale``.
    """
    long_edge, short_edge = max(img_scale), min(img_scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * float(factor) + 0.5), int(width * float(factor) + 0.5)


def mmseg_aligned_size(
    height: int,
    width: int,
    img_scale: Sequence[int] = VSPW_IMG_SCALE,
    size_divisor: int = VSPW_SIZE_DIVISOR,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The two sizes of ``AlignedResize(keep_ratio=True, size_divisor)`` for one frame size.

    Args:
        height: Frame height.
        width: Frame width.
        img_scale: mmcv's ``img_scale`` (long, short edge limits).
        size_divisor: Both output sides are multiples of it.

    Returns:
        ``((h1, w1), (h2, w2))``: the size after ``mmcv.imrescale`` and after ``_align``
        (the size the backbone sees). E.g. 480x853 -> (480, 853), (480, 864).
    """
    h1, w1 = mmcv_rescale_size(height, width, img_scale)
    aligned = (-(-h1 // size_divisor) * size_divisor, -(-w1 // size_divisor) * size_divisor)
    return (h1, w1), aligned


def mmseg_aligned_resize(
    frames: torch.Tensor,
    img_scale: Sequence[int] = VSPW_IMG_SCALE,
    size_divisor: int = VSPW_SIZE_DIVISOR,
) -> torch.Tensor:
    """mmseg's ``AlignedResize(keep_ratio=True)`` of uint8 frames, as CFFM / MRCFA / TV3S test.

    Args:
        frames: ``(B, 3, H, W)`` uint8 (channels first; any channel count works).
        img_scale: mmcv's ``img_scale`` (long, short edge limits).
        size_divisor: Both output sides are multiples of it.

    Returns:
        ``(B, 3, h2, w2)`` uint8 with ``(h2, w2)`` from :func:`mmseg_aligned_size`.
    """
    (h1, w1), (h2, w2) = mmseg_aligned_size(frames.shape[-2], frames.shape[-1], img_scale, size_divisor)
    return cv2_linear_resize(cv2_linear_resize(frames, (h1, w1)), (h2, w2))


def cv2_linear_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)`` of uint8 images, bit-exact.

    Args:
        images: ``(..., H, W)`` uint8, e.g. ``(B, 3, H, W)``.
        size: ``(h, w)`` output size.

    Returns:
        ``(..., h, w)`` uint8 on the device of ``images``.

    Raises:
        ValueError: Not uint8, fewer than 2 dims, or an empty input or output size.
    """
    if images.dtype != torch.uint8 or images.ndim < 2:
        raise ValueError(f"cv2_linear_resize needs (..., H, W) uint8 images, got {images.dtype} {tuple(images.shape)}")
    src_h, src_w = images.shape[-2:]
    dst_h, dst_w = int(size[0]), int(size[1])
    if min(src_h, src_w, dst_h, dst_w) <= 0:
        raise ValueError(f"cv2_linear_resize: empty size, {src_h}x{src_w} -> {dst_h}x{dst_w}")
    if (dst_h, dst_w) == (src_h, src_w):
        return images.clone()
    pixels = images.to(torch.int32)  # (..., H, W)
    device = images.device
    x0, x1, a0, a1 = _linear_taps(src_w, dst_w, clamp_weights=True)
    y0, y1, b0, b1 = _linear_taps(src_h, dst_h, clamp_weights=False)
    x0, x1, a0, a1, y0, y1, b0, b1 = (t.to(device) for t in (x0, x1, a0, a1, y0, y1, b0, b1))
    # HResizeLinear: every source row at the output width, exact integers up to 255 * 2048.
    rows = pixels.index_select(-1, x0) * a0 + pixels.index_select(-1, x1) * a1  # (..., H, w) int32
    # VResizeLinear<uchar, int, short, FixedPtCast<int, uchar, 22>>: its fixed-point
    # rounding, not the exact (v + 2^21) >> 22, is what OpenCV computes.
    top = (b0[:, None] * (rows.index_select(-2, y0) >> 4)) >> 16  # (..., h, w) int32
    bottom = (b1[:, None] * (rows.index_select(-2, y1) >> 4)) >> 16
    return ((top + bottom + 2) >> 2).to(torch.uint8)


def _linear_taps(
    src: int, dst: int, clamp_weights: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's source indices and 11-bit weights of bilinear resizing along one axis.

    Args:
        src: Source length.
        dst: Output length.
        clamp_weights: The horizontal axis's rule: outside the source, take the edge pixel
            with weight 1. Vertically OpenCV only clamps the row indices.

    Returns:
        ``(i0, i1, w0, w1)``, each ``(dst,)``: int64 indices in ``0..src-1`` and int32
        weights with ``w0 + w1 = 2048``.
    """
    scale = 1.0 / (dst / src)  # OpenCV: scale_x = 1. / inv_scale_x, inv_scale_x = dst / src
    pos = ((torch.arange(dst, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)
    start = torch.floor(pos)  # (dst,) float32, cvFloor
    frac = pos - start  # float32, as OpenCV's `fx -= sx`
    start = start.to(torch.int64)
    if clamp_weights:
        outside = (start < 0) | (start >= src - 1)
        frac = torch.where(outside, torch.zeros_like(frac), frac)
        start = start.clamp(0, src - 1)
    # saturate_cast<short>(float) rounds half to even, as torch.round does.
    w0 = torch.round((1.0 - frac) * _COEF_SCALE).to(torch.int32)
    w1 = torch.round(frac * _COEF_SCALE).to(torch.int32)
    i0 = start.clamp(0, src - 1)
    i1 = (start + 1).clamp(0, src - 1)
    return i0, i1, w0, w1
