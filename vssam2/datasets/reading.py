"""Per-file reading with validation: every failure is a DataError naming the file.

Masks and predictions are read with PIL, never cv2: cv2 expands palette PNGs to colour,
which would turn class ids into palette colours.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vssam2.datasets.index import VideoEntry
from vssam2.datasets.layout import DatasetLayout
from vssam2.errors import DataError
from vssam2.labels import IGNORE_INDEX, out_of_range_ids
from vssam2.parallel import run_all

# Size of an image as (height, width).
Size = tuple[int, int]
# How many distinct bad label values a message lists.
_MAX_VALUES = 10


def _open(path: Path) -> Image.Image:
    """Opens and fully decodes an image (PIL decodes lazily; corruption surfaces on load)."""
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError as error:
        raise DataError(f"{path}: file is missing", path) from error
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        raise DataError(f"{path}: cannot decode image ({type(error).__name__}: {error})", path) from error
    return image


def image_size(path: Path) -> Size:
    """(height, width) from the file header only, without decoding pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError as error:
        raise DataError(f"{path}: file is missing", path) from error
    except Exception as error:
        raise DataError(f"{path}: cannot read image header ({type(error).__name__}: {error})", path) from error
    return height, width


def read_frame(path: Path) -> np.ndarray:
    """Reads an RGB frame: (H, W, 3) uint8 (grey or CMYK JPEGs are converted)."""
    image = _open(path)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _read_label_image(path: Path, what: str) -> np.ndarray:
    """Reads a single-channel label PNG as its stored integer values: (H, W)."""
    array = np.asarray(_open(path))
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"{path}: {what} must be a single-channel integer image, got shape {array.shape} dtype {array.dtype}",
            path,
        )
    return array


def read_mask(path: Path, layout: DatasetLayout, num_classes: int) -> np.ndarray:
    """Reads a ground-truth mask and decodes it to evaluation ids: (H, W) uint8, 255 = ignore."""
    raw = _read_label_image(path, f"{layout.name} mask")
    try:
        return layout.decode_mask(raw, num_classes)
    except ValueError as error:
        raise DataError(f"{path}: {layout.name} mask has label ids out of range: {error}", path) from error


def read_prediction(path: Path, method: str, num_classes: int) -> np.ndarray:
    """Reads a prediction of evaluation ids: (H, W) uint8; 0…num_classes−1, 255 = no prediction."""
    pred = _read_label_image(path, f"prediction of method {method!r}")
    values = out_of_range_ids(pred, num_classes - 1, IGNORE_INDEX, _MAX_VALUES)
    if values:
        raise DataError(
            f"{path}: prediction of method {method!r} has ids out of range "
            f"(allowed 0..{num_classes - 1} and {IGNORE_INDEX}): {values}",
            path,
        )
    return pred.astype(np.uint8, copy=False)


def _check_size(path: Path, size: Size, ref_path: Path, ref_size: Size) -> None:
    if size != ref_size:
        raise DataError(
            f"size mismatch: {path} is {size[0]}x{size[1]} (HxW) but {ref_path} is {ref_size[0]}x{ref_size[1]}",
            path,
        )


def load_frames_range(
    video: VideoEntry,
    start: int,
    stop: int,
    layout: DatasetLayout,
    num_classes: int,
    load_frames: bool = True,
    load_preds: bool = True,
) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
    """Reads frames ``start:stop`` of a video with every check the evaluation relies on.

    All files of every frame must have the size of the video's first mask (a video of
    changing resolution cannot be stacked, nor scored for temporal consistency). With
    ``load_frames=False`` frames are not decoded, but their header size is still checked.

    Returns:
        ``{"gt": (T, H, W) uint8, "preds": {method: (T, H, W) uint8}}`` plus
        ``"frames": (T, H, W, 3) uint8`` when ``load_frames``.

    Raises:
        DataError: naming the file on a missing or undecodable file, a size mismatch (naming
            both files and sizes) or label ids out of range.
    """
    ref_path = video.mask_path(0)
    ref_size = image_size(ref_path)
    methods = list(video.pred_dirs) if load_preds else []
    # Every file is checked to have ref_size before it is stored, so each thread writes its
    # decoded frame straight into the chunk (no list of frames stacked afterwards).
    count = max(stop - start, 0)
    gts = np.empty((count, *ref_size), dtype=np.uint8)  # (T, H, W)
    preds_out = {method: np.empty((count, *ref_size), dtype=np.uint8) for method in methods}  # (T, H, W) each
    frames = np.empty((count, *ref_size, 3), dtype=np.uint8) if load_frames else None  # (T, H, W, 3)

    def read(index: int) -> None:
        slot = index - start
        mask_path = video.mask_path(index)
        gt = read_mask(mask_path, layout, num_classes)  # (H, W) uint8
        _check_size(mask_path, gt.shape, ref_path, ref_size)
        gts[slot] = gt
        frame_path = video.frame_path(index)
        if frames is not None:
            frame = read_frame(frame_path)  # (H, W, 3) uint8
            _check_size(frame_path, frame.shape[:2], mask_path, gt.shape)
            frames[slot] = frame
        else:
            _check_size(frame_path, image_size(frame_path), mask_path, gt.shape)
        for method in methods:
            pred_path = video.pred_path(method, index)
            pred = read_prediction(pred_path, method, num_classes)  # (H, W) uint8
            _check_size(pred_path, pred.shape, mask_path, gt.shape)
            preds_out[method][slot] = pred

    # PNG / JPEG decoding releases the GIL: frames are read one per core (the first error in
    # frame order is raised). Inside DataLoader workers torch runs 1 thread, so this is serial.
    run_all([functools.partial(read, index) for index in range(start, stop)], "cpu")
    out: dict[str, torch.Tensor | dict[str, torch.Tensor]] = {
        "gt": torch.from_numpy(gts),
        "preds": {method: torch.from_numpy(array) for method, array in preds_out.items()},
    }
    if frames is not None:
        out["frames"] = torch.from_numpy(frames)
    return out


def validate_video(
    video: VideoEntry, layout: DatasetLayout, num_classes: int, load_frames: bool = True, chunk: int = 16
) -> None:
    """Reads a whole video with the checks of :func:`load_frames_range`, discarding the data.

    Raises:
        DataError: on the first problem found.
    """
    for start in range(0, video.num_frames, chunk):
        load_frames_range(video, start, min(start + chunk, video.num_frames), layout, num_classes, load_frames)
