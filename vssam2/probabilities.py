"""Class probabilities of a base model: the top-k format on disk, in chunks, and simulated.

A probability folder mirrors a prediction folder (``<pred_root>/<video>/<frame>.png``):
``<prob_root>/<video>/<frame>.npz``, written with :func:`numpy.savez_compressed`, holding

- ``classes``: (k, H, W) uint8 evaluation ids 0…C−1, by descending probability;
- ``probs``: (k, H, W) float16 probabilities in [0, 1], non-increasing along k, summing to
  at most 1 + 1e-2 (the C − k classes not stored hold the rest).

k ≥ 1 is the same for every frame of a folder. Full C-class maps would be 248 bytes per
pixel at C = 124 (about 2.5 TB for VSPW val); why top-k, and the measured sizes, are in
``docs/probabilities.md``. The top-1 class need not equal the folder's prediction PNG (a
model may post-process its hard prediction); only shapes, dtypes and ranges are checked.

In memory a chunk's probabilities are one :class:`TopKProbs` per method, (T, k, H, W).
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vssam2.atomic import atomic_write
from vssam2.errors import DataError

PROB_SUFFIX = ".npz"
# Arrays of a probability file, and the dtypes they must have.
CLASSES_FIELD = "classes"
PROBS_FIELD = "probs"
# float16 rounds each stored value by up to 2^-11 relative; a row that sums to 1 in float32
# may exceed it slightly once stored.
SUM_TOLERANCE = 1e-2
# Ids travel as uint8 and 255 is the ignore id elsewhere in the project.
MAX_CLASSES = 255


@dataclass
class TopKProbs:
    """The k most probable classes of every pixel of T frames, with their probabilities.

    Attributes:
        classes: (T, k, H, W) uint8 evaluation ids, by descending probability.
        probs: (T, k, H, W) float16 probabilities, non-increasing along k.
    """

    classes: torch.Tensor  # (T, k, H, W) uint8
    probs: torch.Tensor  # (T, k, H, W) float16

    def __post_init__(self) -> None:
        if self.classes.dtype != torch.uint8 or self.probs.dtype != torch.float16:
            raise ValueError(
                f"TopKProbs needs uint8 classes and float16 probs, got {self.classes.dtype} and {self.probs.dtype}"
            )
        if self.classes.ndim != 4 or self.classes.shape != self.probs.shape:
            raise ValueError(
                "TopKProbs needs classes and probs of one (T, k, H, W) shape, got "
                f"{tuple(self.classes.shape)} and {tuple(self.probs.shape)}"
            )

    @property
    def k(self) -> int:
        """Classes kept per pixel."""
        return int(self.classes.shape[1])

    @property
    def num_frames(self) -> int:
        """Frames T."""
        return int(self.classes.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TopKProbs:
        """Both tensors on ``device`` (Lightning's batch transfer calls this on chunks)."""
        return TopKProbs(
            self.classes.to(device, non_blocking=non_blocking), self.probs.to(device, non_blocking=non_blocking)
        )

    @classmethod
    def from_logits(cls, logits: torch.Tensor, k: int) -> TopKProbs:
        """Softmax over classes, then the k largest, as a live model hands them over.

        Frames are done one at a time, so only one frame's (C, H, W) float32 softmax exists at
        once (a chunk of 16 frames of 124 classes at 480p would be 3.2 GB).

        Args:
            logits: (T, C, H, W) float class scores, C ≤ 255.
            k: classes to keep, 1 ≤ k ≤ C.

        Returns:
            The top-k on the device of ``logits``.
        """
        if logits.ndim != 4 or not logits.is_floating_point():
            raise ValueError(f"logits must be (T, C, H, W) float, got {tuple(logits.shape)} {logits.dtype}")
        num_classes = logits.shape[1]
        if num_classes > MAX_CLASSES:
            raise ValueError(f"at most {MAX_CLASSES} classes fit in uint8 ids, got {num_classes}")
        if not 1 <= k <= num_classes:
            raise ValueError(f"k must be in 1..{num_classes}, got {k}")
        t, _, h, w = logits.shape
        classes = torch.empty((t, k, h, w), dtype=torch.uint8, device=logits.device)  # (T, k, H, W)
        probs = torch.empty((t, k, h, w), dtype=torch.float16, device=logits.device)  # (T, k, H, W)
        for frame in range(t):
            soft = torch.softmax(logits[frame].float(), dim=0)  # (C, H, W) float32
            values, indices = soft.topk(k, dim=0)  # (k, H, W) each, sorted descending
            # float16 rounding is monotone: sorted values stay non-increasing.
            probs[frame] = values.to(torch.float16)
            classes[frame] = indices.to(torch.uint8)
        return cls(classes, probs)


# ------------------------------------------------------------------------------ one frame


def write_prob_frame(path: str | Path, classes: np.ndarray, probs: np.ndarray) -> Path:
    """Writes one frame's top-k probabilities atomically (the folder must exist).

    Args:
        path: ``<prob_root>/<video>/<frame>.npz``.
        classes: (k, H, W) uint8 evaluation ids, by descending probability.
        probs: (k, H, W) float16 probabilities, non-increasing along k.

    Returns:
        ``path``.

    Raises:
        ValueError: on wrong dtypes or shapes (the values are checked when read).
    """
    classes = np.asarray(classes)
    probs = np.asarray(probs)
    if classes.dtype != np.uint8 or probs.dtype != np.float16:
        raise ValueError(f"need uint8 classes and float16 probs, got {classes.dtype} and {probs.dtype}")
    if classes.ndim != 3 or classes.shape != probs.shape or classes.shape[0] < 1:
        raise ValueError(f"need classes and probs of one (k, H, W) shape, k >= 1, got {classes.shape}, {probs.shape}")

    def write(tmp: Path) -> None:
        # A file object: given a name, numpy would append ".npz" to the temporary name.
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **{CLASSES_FIELD: classes, PROBS_FIELD: probs})

    return atomic_write(path, write)


def _first(mask: np.ndarray) -> str:
    """``N pixels, first at (rank, y, x)`` for a bad-value mask (only built on errors)."""
    where = tuple(int(i) for i in np.argwhere(mask)[0])
    return f"{int(mask.sum())} values, first at (rank, y, x) = {where}"


def read_prob_frame(
    path: str | Path, num_classes: int, size: tuple[int, int], k: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reads and validates one frame's top-k probabilities.

    Args:
        path: the ``.npz`` file.
        num_classes: C; class ids must be below it.
        size: the frame's (H, W).
        k: the folder's k (None: any k ≥ 1).

    Returns:
        ``classes`` (k, H, W) uint8 and ``probs`` (k, H, W) float16.

    Raises:
        DataError: naming the file and the field: unreadable file, missing array, wrong
            dtype or shape, class ids ≥ C or repeated at a pixel, probabilities outside [0, 1]
            or NaN, increasing along k, summing above 1 + 1e-2, or k not the folder's.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        handle = open(path, "rb")  # closed by the with below
    except FileNotFoundError as error:
        raise DataError(f"{path}: probability file is missing", path) from error
    except OSError as error:
        raise DataError(f"{path}: cannot open probability file ({error})", path) from error
    # Our own handle: numpy leaks the one it opens when a truncated zip fails to parse.
    with handle:
        try:
            npz = np.load(handle, allow_pickle=False)
        except Exception as error:  # not a zip, truncated, empty: numpy and zipfile raise many kinds
            raise DataError(f"{path}: cannot read probability file ({type(error).__name__}: {error})", path) from error
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: probability file is a single .npy array, not an .npz of classes and probs", path)
        with npz:
            for field in (CLASSES_FIELD, PROBS_FIELD):
                if field not in npz.files:
                    raise DataError(f"{path}: probability file has no {field!r} array (has {sorted(npz.files)})", path)
                try:
                    arrays[field] = npz[field]
                except Exception as error:
                    raise DataError(
                        f"{path}: cannot read array {field!r} ({type(error).__name__}: {error})", path
                    ) from error
    classes, probs = arrays[CLASSES_FIELD], arrays[PROBS_FIELD]
    for field, array, dtype in ((CLASSES_FIELD, classes, np.uint8), (PROBS_FIELD, probs, np.float16)):
        if array.dtype != dtype:
            raise DataError(f"{path}: {field!r} must be {np.dtype(dtype).name}, got {array.dtype}", path)
        if array.ndim != 3 or array.shape[0] < 1:
            raise DataError(f"{path}: {field!r} must be (k, H, W) with k >= 1, got shape {array.shape}", path)
    if classes.shape != probs.shape:
        raise DataError(f"{path}: 'classes' is {classes.shape} but 'probs' is {probs.shape} (need one shape)", path)
    if tuple(probs.shape[1:]) != tuple(size):
        raise DataError(
            f"{path}: 'probs' is {probs.shape[1]}x{probs.shape[2]} (HxW) but the frame is {size[0]}x{size[1]}", path
        )
    if k is not None and probs.shape[0] != k:
        raise DataError(f"{path}: 'probs' holds k={probs.shape[0]} classes per pixel, the folder's k is {k}", path)
    bad = classes >= num_classes
    if bad.any():
        raise DataError(f"{path}: 'classes' has ids >= num_classes={num_classes}: {_first(bad)}", path)
    for rank in range(1, classes.shape[0]):
        repeated = (classes[:rank] == classes[rank]).any(axis=0)  # (H, W)
        if repeated.any():
            y, x = (int(i) for i in np.argwhere(repeated)[0])
            raise DataError(
                f"{path}: 'classes' repeats a class at {int(repeated.sum())} pixels, first (y, x) = ({y}, {x})", path
            )
    bad = np.isnan(probs)
    if bad.any():
        raise DataError(f"{path}: 'probs' has NaN: {_first(bad)}", path)
    bad = (probs < 0) | (probs > 1)
    if bad.any():
        raise DataError(f"{path}: 'probs' has values outside [0, 1]: {_first(bad)}", path)
    bad = probs[1:] > probs[:-1]  # (k-1, H, W): rank r+1 above rank r
    if bad.any():
        raise DataError(f"{path}: 'probs' increases along k (must be sorted descending): {_first(bad)}", path)
    total = probs.sum(axis=0, dtype=np.float32)  # (H, W)
    bad = total > 1 + SUM_TOLERANCE
    if bad.any():
        y, x = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: 'probs' sums above 1 + {SUM_TOLERANCE} at {int(bad.sum())} pixels, "
            f"first (y, x) = ({y}, {x}) with sum {float(total[y, x]):.4f}",
            path,
        )
    return classes, probs


def read_prob_k(path: str | Path) -> int:
    """k of a probability file from the header of its ``probs`` array (no pixel is decompressed
    beyond the header): how a folder's k is fixed once, from its first file.

    Raises:
        DataError: naming the file when it cannot be read or ``probs`` is not (k, H, W).
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{PROBS_FIELD}.npy") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(handle)
    except FileNotFoundError as error:
        raise DataError(f"{path}: probability file is missing", path) from error
    except KeyError as error:
        raise DataError(f"{path}: probability file has no {PROBS_FIELD!r} array", path) from error
    except Exception as error:
        raise DataError(f"{path}: cannot read probability file ({type(error).__name__}: {error})", path) from error
    if len(shape) != 3 or shape[0] < 1:
        raise DataError(f"{path}: {PROBS_FIELD!r} must be (k, H, W) with k >= 1, got shape {shape}", path)
    return int(shape[0])


def read_prob_frames(paths: Sequence[Path], num_classes: int, size: tuple[int, int], k: int | None = None) -> TopKProbs:
    """Reads the probability files of consecutive frames into one :class:`TopKProbs`.

    Files are decompressed one per core (zlib releases the GIL); the first bad file in frame
    order is the one reported.

    Args:
        paths: one ``.npz`` per frame, in frame order.
        num_classes: C.
        size: (H, W) of every frame.
        k: the folder's k; None takes the first file's.

    Returns:
        (T, k, H, W) classes and probabilities.
    """
    # Imported here: vssam2.parallel is cheap, but keep this module importable on its own.
    from vssam2.parallel import run_all

    if not paths:
        empty = (0, k or 1, *size)
        return TopKProbs(torch.zeros(empty, dtype=torch.uint8), torch.zeros(empty, dtype=torch.float16))
    first_classes, first_probs = read_prob_frame(paths[0], num_classes, size, k)
    k = first_probs.shape[0]
    classes = np.empty((len(paths), k, *size), dtype=np.uint8)  # (T, k, H, W)
    probs = np.empty((len(paths), k, *size), dtype=np.float16)  # (T, k, H, W)
    classes[0], probs[0] = first_classes, first_probs

    def read(index: int) -> None:
        classes[index], probs[index] = read_prob_frame(paths[index], num_classes, size, k)

    run_all([functools.partial(read, index) for index in range(1, len(paths))], "cpu")
    return TopKProbs(torch.from_numpy(classes), torch.from_numpy(probs))


# ------------------------------------------------------------------------------ simulated


def _upsample_axis(array: np.ndarray, axis: int, length: int, cell: float) -> np.ndarray:
    """Linear interpolation of knots spaced ``cell`` samples apart to ``length`` samples."""
    pos = np.arange(length, dtype=np.float32) / np.float32(cell)
    left = np.floor(pos).astype(np.int64)
    frac = (pos - left).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
    return np.take(array, left, axis=axis) * (1 - frac) + np.take(array, left + 1, axis=axis) * frac


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], cells: tuple[float, float, float]
) -> np.ndarray:
    """(T, H, W) float32 smooth random field of roughly unit scale (linear value noise)."""
    coarse = tuple(int(n / c) + 2 for n, c in zip(shape, cells))
    field = rng.standard_normal(coarse, dtype=np.float32)
    # Small axes first: the big (H, W) array is built by the last interpolation only.
    for axis in (0, 1, 2):
        field = _upsample_axis(field, axis, shape[axis], cells[axis])
    return field.astype(np.float32, copy=False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def simulate_probabilities(
    gt: np.ndarray,
    pred: np.ndarray,
    rng: np.random.Generator,
    k: int = 3,
    num_classes: int = 124,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k probabilities a simulated model could have output with its prediction ``pred``.

    The top-1 class is ``pred`` everywhere. Its probability is high (≈ 0.95) inside regions
    where ``pred`` is right, lower within a few pixels of the prediction's boundaries
    (≈ 0.7) and lower still where ``pred`` is wrong (≈ 0.5–0.65), modulated by a smooth
    random field, so some mistakes are confident and some right pixels are not. The
    runner-up is the ground-truth class on about half the wrong pixels (spatially coherent
    patches), else the class across the nearest prediction boundary (often the GT too), else
    a per-video look-alike of the top-1 class; ranks 3…k are per-video look-alikes. So a
    probability-weighted vote can recover a masklet that is mostly wrong with low
    confidence, but not one that is confidently or entirely wrong.

    Args:
        gt: (T, H, W) uint8 evaluation ids, 255 = ignore (ignore pixels count as right).
        pred: (T, H, W) uint8 evaluation ids 0…C−1.
        rng: random generator (the result depends only on the inputs and its state).
        k: classes kept per pixel, 1 ≤ k ≤ C.
        num_classes: C.

    Returns:
        ``classes`` (T, k, H, W) uint8 and ``probs`` (T, k, H, W) float16, valid for
        :func:`read_prob_frame` frame by frame.
    """
    from scipy import ndimage

    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"gt and pred must be (T, H, W) of one shape, got {gt.shape} and {pred.shape}")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {num_classes}")
    if not 1 <= k <= num_classes:
        raise ValueError(f"k must be in 1..{num_classes}, got {k}")
    if pred.size and int(pred.max()) >= num_classes:
        raise ValueError(f"pred ids must be in 0..{num_classes - 1}, got {int(pred.max())}")
    t, h, w = pred.shape
    pred = pred.astype(np.uint8, copy=False)
    wrong = (gt != pred) & (gt < num_classes)  # (T, H, W): ignore pixels are never wrong
    # Confidence is smooth in space and time like an upsampled network output.
    cells = (8.0, max(8.0, min(h, w) / 6), max(8.0, min(h, w) / 6))
    noise = _smooth_field(rng, (t, h, w), cells)  # (T, H, W)

    # Nearness to a prediction boundary: 1 on it, 0 from `radius` + 1 pixels away.
    radius = max(2, round(min(h, w) / 80))
    edge = np.zeros((t, h, w), dtype=np.float32)
    vertical = pred[:, 1:] != pred[:, :-1]
    horizontal = pred[:, :, 1:] != pred[:, :, :-1]
    edge[:, 1:] += vertical
    edge[:, :-1] += vertical
    edge[:, :, 1:] += horizontal
    edge[:, :, :-1] += horizontal
    window = (1, 2 * radius + 1, 2 * radius + 1)
    near = np.clip(ndimage.uniform_filter(np.minimum(edge, 1), size=window) * ((2 * radius + 1) / 2), 0, 1)

    score = np.where(wrong, -0.8 * near + noise, 3.0 - 2.5 * near + 0.7 * noise)  # (T, H, W) logit-like
    p1 = (0.3 + 0.7 * _sigmoid(score)).astype(np.float32)  # (T, H, W) in (0.3, 1)
    classes = np.empty((t, k, h, w), dtype=np.uint8)  # (T, k, H, W)
    probs = np.empty((t, k, h, w), dtype=np.float32)  # (T, k, H, W)
    classes[:, 0], probs[:, 0] = pred, p1
    if k == 1:
        return classes, probs.astype(np.float16)

    def lookalike() -> np.ndarray:
        # A class each class is mistaken for in this video (never itself).
        return ((np.arange(num_classes) + rng.integers(1, num_classes, num_classes)) % num_classes).astype(np.uint8)

    high = ndimage.maximum_filter(pred, size=window)
    low = ndimage.minimum_filter(pred, size=window)
    across = np.where(high != pred, high, low)  # (T, H, W) a class within `radius`, if any
    runner = np.where(across != pred, across, lookalike()[pred])  # (T, H, W)
    gt_second = wrong & (_smooth_field(rng, (t, h, w), cells) < 0.0)  # (T, H, W) about half the wrong pixels
    runner = np.where(gt_second, gt, runner).astype(np.uint8)
    share = np.clip(0.65 + 0.1 * _smooth_field(rng, (t, h, w), cells), 0.35, 0.9)  # of 1 - p1, to the runner-up
    share = np.where(wrong & (runner == gt), np.minimum(share + 0.2, 0.95), share)
    p2 = np.minimum((1 - p1) * share, p1)
    classes[:, 1], probs[:, 1] = runner, p2
    rest = 1 - p1 - p2  # (T, H, W) what the classes after the runner-up share
    for rank in range(2, k):
        candidate = lookalike()[pred]  # (T, H, W)
        # Bump ids taken by higher ranks; `rank` bumps always reach a free id.
        for _ in range(rank):
            taken = (classes[:, :rank] == candidate[:, None]).any(axis=1)
            if not taken.any():
                break
            candidate[taken] = (candidate[taken].astype(np.int64) + 1) % num_classes
        classes[:, rank] = candidate
        probs[:, rank] = np.minimum(rest * 0.5 ** (rank - 1), probs[:, rank - 1])
    return classes, probs.astype(np.float16)


def write_probabilities(
    dataset_root: str | Path,
    pred_root: str | Path,
    out_root: str | Path,
    split: str,
    num_classes: int = 124,
    k: int = 3,
    seed: int = 0,
    layout: Literal["vspw", "vipseg"] = "vspw",
) -> Path:
    """Writes the probability folder of one simulated model's predictions for one split.

    The ground truth is read from ``dataset_root`` and the predictions from ``pred_root``;
    each video's probabilities depend only on them, the seed, the model folder's name and the
    video (:func:`vssam2.synthetic.video_rng`).

    Args:
        dataset_root: a dataset written by :mod:`vssam2.synthetic`.
        pred_root: one model's prediction folder ``<video>/<frame>.png``.
        out_root: the probability folder to write (``<video>/<frame>.npz``).
        split: split whose videos are written.
        num_classes: C.
        k: classes kept per pixel.
        seed: seed of the simulation.
        layout: layout of ``dataset_root``.

    Returns:
        ``out_root`` as a Path.
    """
    from vssam2.datasets.reading import read_prediction
    from vssam2.synthetic import read_split, read_video_labels, video_rng

    pred_root, out_root = Path(pred_root), Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    for video in read_split(dataset_root, split):
        frame_names, gt = read_video_labels(dataset_root, video, layout)  # (T, H, W) uint8
        pred = np.stack(
            [read_prediction(pred_root / video / f"{name}.png", pred_root.name, num_classes) for name in frame_names]
        )  # (T, H, W) uint8
        rng = video_rng(seed, "probabilities", pred_root.name, video)
        classes, probs = simulate_probabilities(gt, pred, rng, k=k, num_classes=num_classes)
        folder = out_root / video
        folder.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(frame_names):
            write_prob_frame(folder / f"{name}{PROB_SUFFIX}", classes[index], probs[index])
    return out_root
