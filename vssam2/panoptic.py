"""Video panoptic predictions → semantic prediction folders (VIPSeg, Table 2).

Panoptic models (DVIS, DVIS++, CAVIS, …) write VIPSeg predictions in a panoptic format; this
module turns them into the ``result_submission`` layout every other model uses here —
``<out_root>/<video>/<frame>.png``, 8-bit PNG (mode "L") of evaluation ids 0…123, 255 = no
prediction — so they can be refined and scored like any other model.

Supported inputs:

1. **VIPSeg panomask** (``convert_panomask_folder``): ``<in_root>/<video>/<frame>.png``,
   single-channel 8- or 16-bit PNG (modes L, P, I;16, I) with VIPSeg ground-truth values:
   stuff = raw category id (< 125), thing = category × 100 + instance, 0 = void. Mapped with
   :func:`vssam2.labels.vipseg_panoptic_to_eval`.
2. **COCO panoptic, VIPSeg VPS format** (``convert_coco_panoptic``), as written by
   ``VPSEvaluator`` in ``dvis/data_video/vps_eval.py`` of DVIS (zhang-tao-whu/DVIS), the same
   file in DVIS++ (zhang-tao-whu/DVIS_Plus, ``DVIS_Plus/dvis_Plus/data_video/vps_eval.py``) and CAVIS
   (Seung-Hun-Lee/CAVIS, ``cavis/data_video/vps_eval.py``): ``<output_dir>/pred.json``
   ``{"annotations": [{"annotations": [{"segments_info": [{"bbox": [x, y, w, h], "area": …,
   "category_id": …, "iscrowd": 0, "id": …}, …], "file_name": "<frame>.jpg"}, …],
   "video_id": "<video>"}, …]}`` and RGB PNGs ``<output_dir>/pan_pred/<video>/<frame>.png``
   with segment id = R + 256·G + 256²·B (COCO rgb2id). ``file_name`` is the *image's* name
   (``.jpg``), not the PNG's; a frame's PNG is found by its stem (see :func:`png_candidates`).
   Image-level entries (``{"file_name": "<video>/<frame>.png", "segments_info": […]}`` directly
   in the top-level ``annotations`` list, plain COCO panoptic) are accepted too; the video is
   then ``video_id`` / ``video_name`` if present, else the folder part of ``file_name``.
3. **COCO panoptic, per-video folders** (``convert_coco_panoptic_folder``):
   ``<in_root>/<video>/<frame>.png`` RGB plus either ``<in_root>/<video>/segments_info.json``
   (a list of ``{"file_name", "segments_info"}`` entries, or ``{"annotations": [...]}``, or a
   dict ``{frame file name or stem: segments_info}``) or one ``<frame>.json`` per frame
   (a ``segments_info`` list, or a dict with key ``segments_info``).

For the COCO formats, ``category_id`` is the model's category: evaluation id =
``category_id − category_offset`` (VIPSeg models with 0-based categories in the 124-class
order, as DVIS / DVIS++ / CAVIS write them: offset 0, the default; 1-based: offset 1), or an
explicit ``category_map`` (model category → evaluation id; 255 / null = drop to "no
prediction"), given as a dict or a JSON file (an object ``{"<category_id>": eval_id}`` or a
list indexed by category id). Pixels of segment id 0 (COCO void) that segments_info does not
list, get 255. A single-channel PNG is read as segment ids directly.

Frame pairing: the official VIPSeg evaluators (``eval_vpq_vspw.py`` / ``eval_stq_vspw.py`` of
VIPSeg-Dataset, copied into DVIS++ and CAVIS as ``utils/``) never read a prediction's
``file_name``; they pair the i-th prediction entry of a video with the i-th ground-truth frame
and open ``pan_pred/<video>/<ground-truth file_name>``. Without ground truth, this module pairs
each entry with the PNG its ``file_name`` names (by stem); for the writers above that is the
same pairing, since they name PNG i after image i. Two entries of one video that resolve to one
PNG are an error.

Duplicate segment ids within one frame's segments_info: entries with the same id and the same
evaluation id are merged into one segment, as ``eval_vpq_vspw.py`` does (it keeps the first
entry and adds the areas); their number is reported as ``merged_duplicates``. If the entries
disagree on the category, the official scripts disagree too (``eval_vpq_vspw.py`` keeps the
first entry's category, ``eval_stq_vspw.py`` paints the pixels with each entry in turn, so the
last wins): that is an error unless ``duplicate_categories`` is ``"first"`` or ``"last"``.

Errors (``ValueError`` naming the file): a segment id in a PNG that segments_info does not
list, a category out of range / missing from the map, a duplicate segment id with conflicting
categories, a missing PNG for a listed frame (the message lists the paths tried), a panomask
value that is no VIPSeg class. Missing PNGs are found before anything is written.

Output frames are named after the PNG read (``<stem>.png``). Conversion is resumable: frames
whose output exists are skipped (``overwrite=False``); writes are atomic (temporary file, then
:func:`os.replace`).

Command line::

    python -m vssam2.panoptic panomask --input DIR --output DIR
    python -m vssam2.panoptic coco --json FILE --png-root DIR --output DIR [--category-offset 1]
        [--duplicate-categories error|first|last]
    python -m vssam2.panoptic coco --input DIR --output DIR      # per-video folders (format 3)
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from vssam2.atomic import atomic_write_png
from vssam2.labels import IGNORE_INDEX, NUM_CLASSES, vipseg_panoptic_to_eval

__all__ = [
    "ConversionStats",
    "DuplicateCategories",
    "rgb2id",
    "read_segment_png",
    "png_candidates",
    "load_category_map",
    "segments_to_lut",
    "segment_ids_to_eval",
    "convert_panomask_folder",
    "convert_coco_panoptic",
    "convert_coco_panoptic_folder",
    "main",
]

DuplicateCategories = Literal["error", "first", "last"]
"""What to do with one segment id listed twice in a frame with different categories."""
_DUPLICATE_CATEGORIES: tuple[str, ...] = ("error", "first", "last")


@dataclass
class ConversionStats:
    """What a conversion did.

    Attributes:
        videos: videos seen.
        frames: frames seen (written + skipped).
        written: frames converted and written.
        skipped: frames skipped because their output already existed.
        merged_duplicates: segments_info entries (in the frames written) that repeat an earlier
            entry's segment id and were merged into it.
    """

    videos: int = 0
    frames: int = 0
    written: int = 0
    skipped: int = 0
    merged_duplicates: int = 0


# A frame to convert: (video, PNG path, segments_info, where: the JSON entry for error messages).
_Frame = tuple[str, Path, list, str]


# ---------------------------------------------------------------------------- helpers


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic id of an (H, W, 3) colour PNG: R + 256·G + 256²·B, as int64 (H, W)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise ValueError(f"rgb2id expects (H, W, 3) colours, got shape {rgb.shape}")
    rgb = rgb[..., :3].astype(np.int64)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


def read_segment_png(path: Path) -> np.ndarray:
    """Segment ids of a COCO panoptic PNG: RGB(A) → rgb2id; a single-channel PNG → its values."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing panoptic PNG: {path}")
    with Image.open(path) as image:
        if image.mode in ("RGB", "RGBA"):
            return rgb2id(np.asarray(image))
        if image.mode in ("L", "I;16", "I", "P"):
            return np.asarray(image).astype(np.int64)
        raise ValueError(f"{path}: unsupported PNG mode {image.mode!r} for a panoptic segment map")


def png_candidates(png_dir: Path, file_name: str) -> list[Path]:
    """The PNG paths a frame entry's ``file_name`` may stand for, in the order they are tried.

    1. ``png_dir / file_name`` when ``file_name`` is a relative ``.png`` path (COCO panoptic);
    2. the base name up to its first dot, plus ``.png``: the PNG name DVIS / DVIS++ / CAVIS
       write (``image_name.split('/')[-1].split('.')[0] + '.png'`` in their
       ``data_video/vps_eval.py``) while their ``file_name`` is the image's
       (``image_name.split('/')[-1]``, e.g. ``00000000.jpg``);
    3. the base name with its last extension replaced by ``.png`` (``a.b.jpg`` → ``a.b.png``).

    Args:
        png_dir: the video's PNG folder.
        file_name: the entry's ``file_name`` (image or PNG name, possibly with folders).

    Returns:
        Distinct candidate paths (none checked for existence).
    """
    posix = PurePosixPath(str(file_name).replace("\\", "/"))
    names: list[str] = []
    if posix.suffix.lower() == ".png" and not posix.is_absolute():
        names.append(posix.as_posix())
    names.append(posix.name.split(".")[0] + ".png")
    names.append(posix.stem + ".png")
    candidates: list[Path] = []
    for name in names:
        candidate = Path(png_dir) / name
        if candidate not in candidates:
            candidates.append(candidate)
    return candidates


def _resolve_png(png_dir: Path, file_name: str, where: str) -> Path:
    """The first existing :func:`png_candidates` path; the error lists every path tried."""
    candidates = png_candidates(png_dir, file_name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if png_dir.is_dir():
        present = sorted(p.name for p in png_dir.glob("*.png") if not p.name.startswith("."))
        shown = ", ".join(present[:3]) + (", …" if len(present) > 3 else "")
        there = f"{png_dir} holds {len(present)} PNG(s){': ' + shown if present else ''}"
    else:
        there = f"folder {png_dir} does not exist"
    raise ValueError(
        f"{where}: missing panoptic PNG for file_name {file_name!r}: tried "
        f"{', '.join(str(c) for c in candidates)} ({there})"
    )


def _check_distinct_pngs(frames: Sequence[_Frame]) -> None:
    """Refuses two frame entries that resolve to the same PNG (one would silently overwrite the other)."""
    first_of: dict[Path, str] = {}
    for _, png, _, where in frames:
        if png in first_of:
            raise ValueError(f"{where}: resolves to {png}, as {first_of[png]} does; each frame needs its own PNG")
        first_of[png] = where


def _read_panomask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I;16", "I", "I;16B", "I;16L"):
            raise ValueError(f"{path}: panomask must be a single-channel 8/16-bit PNG, got mode {image.mode!r}")
        array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"{path}: panomask must be 2-D, got shape {array.shape}")
    return array.astype(np.int64)


def _write_eval_ids(path: Path, eval_ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_png(path, np.ascontiguousarray(eval_ids, dtype=np.uint8))


def _output_name(file_name: str) -> str:
    return Path(file_name).stem + ".png"


def load_category_map(source: str | os.PathLike | Mapping | Sequence | None) -> dict[int, int] | None:
    """Reads a model-category → evaluation-id map.

    Args:
        source: None, a dict ``{category_id: eval_id}``, a list indexed by category id, or the
            path of a JSON file holding either (object keys are category ids as strings).
            An eval id of 255 or null means "no prediction".

    Returns:
        dict of int → int (255 for dropped categories), or None if ``source`` is None.
    """
    if source is None:
        return None
    where = "category map"
    if isinstance(source, (str, os.PathLike)):
        where = f"category map {source}"
        with open(source) as handle:
            source = json.load(handle)
    if isinstance(source, Mapping):
        items = source.items()
    elif isinstance(source, Sequence):
        items = enumerate(source)
    else:
        raise ValueError(f"{where}: expected a JSON object or list, got {type(source).__name__}")
    mapping: dict[int, int] = {}
    for key, value in items:
        try:
            mapping[int(key)] = IGNORE_INDEX if value is None else int(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: entry {key!r}: {value!r} is not an integer id") from error
    return mapping


def _category_to_eval(
    category: int, category_offset: int, category_map: Mapping[int, int] | None, num_classes: int, where: str
) -> int:
    if category_map is not None:
        if category not in category_map:
            raise ValueError(f"{where}: category_id {category} is not in the category map")
        eval_id = category_map[category]
        if eval_id == IGNORE_INDEX:
            return eval_id
    else:
        eval_id = category - category_offset
    if not 0 <= eval_id < num_classes:
        raise ValueError(
            f"{where}: category_id {category} gives evaluation id {eval_id}, outside 0..{num_classes - 1} "
            f"(category_offset={category_offset}{', category map' if category_map is not None else ''})"
        )
    return eval_id


def _check_duplicate_policy(duplicate_categories: str) -> None:
    if duplicate_categories not in _DUPLICATE_CATEGORIES:
        raise ValueError(f"duplicate_categories must be one of {_DUPLICATE_CATEGORIES}, got {duplicate_categories!r}")


def _segment_table(
    segments_info: Iterable[Mapping],
    category_offset: int,
    category_map: Mapping[int, int] | None,
    num_classes: int,
    where: str,
    duplicate_categories: DuplicateCategories,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(sorted ids, their eval ids, number of entries merged into an earlier one with the same id)."""
    _check_duplicate_policy(duplicate_categories)
    table: dict[int, tuple[int, int]] = {}  # segment id → (category_id, evaluation id) of the entry kept
    merged = 0
    for segment in segments_info:
        try:
            segment_id, category = int(segment["id"]), int(segment["category_id"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{where}: segment {segment!r} needs integer 'id' and 'category_id'") from error
        eval_id = _category_to_eval(category, category_offset, category_map, num_classes, where)
        if segment_id not in table:
            table[segment_id] = (category, eval_id)
            continue
        # VIPSeg-Dataset ClipPanoFCN/eval_vpq_vspw.py (vpq_compute_single_core) merges a repeated
        # id into the first entry (areas added, the first category kept); eval_stq_vspw.py paints
        # the id's pixels once per entry, so its last entry's category wins.
        merged += 1
        kept_category, kept_eval = table[segment_id]
        if kept_eval == eval_id:
            continue
        if duplicate_categories == "error":
            raise ValueError(
                f"{where}: segment id {segment_id} is listed twice, with category_id {kept_category} "
                f"(evaluation id {kept_eval}) and {category} (evaluation id {eval_id}); the official VIPSeg "
                "scripts disagree on such a file (eval_vpq_vspw.py keeps the first entry, eval_stq_vspw.py "
                "the last), so choose with duplicate_categories='first' or 'last' (--duplicate-categories)"
            )
        if duplicate_categories == "last":
            table[segment_id] = (category, eval_id)
    ids = np.asarray(sorted(table), dtype=np.int64)
    evals = np.asarray([table[segment_id][1] for segment_id in ids.tolist()], dtype=np.uint8)
    return ids, evals, merged


def segments_to_lut(
    segments_info: Iterable[Mapping],
    category_offset: int = 0,
    category_map: Mapping[int, int] | None = None,
    num_classes: int = NUM_CLASSES,
    where: str = "segments_info",
    duplicate_categories: DuplicateCategories = "error",
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted segment ids and their evaluation ids, for :func:`segment_ids_to_eval`.

    Entries repeating an id with the same evaluation id are merged into one segment, as the
    official VIPSeg VPQ script does.

    Args:
        segments_info: the frame's ``segments_info`` entries (``id``, ``category_id``).
        category_offset: evaluation id = category_id − category_offset (no map given).
        category_map: explicit category → eval id map; overrides the offset.
        num_classes: number of evaluation classes.
        where: the JSON entry, for error messages.
        duplicate_categories: one id listed with different evaluation ids: ``"error"``, or keep
            the ``"first"`` (eval_vpq_vspw.py) or ``"last"`` (eval_stq_vspw.py) entry.

    Returns:
        (N,) int64 sorted segment ids and (N,) uint8 evaluation ids.

    Raises:
        ValueError: (naming ``where``) on a segment without integer id / category_id, a category
            outside the evaluation range, or (``"error"``) a duplicate id with conflicting categories.
    """
    ids, evals, _ = _segment_table(
        segments_info, category_offset, category_map, num_classes, where, duplicate_categories
    )
    return ids, evals


def segment_ids_to_eval(
    segment_ids: np.ndarray, ids: np.ndarray, evals: np.ndarray, where: str = "panoptic PNG"
) -> np.ndarray:
    """Maps a segment-id map to evaluation ids through a sorted (ids → evals) table.

    Listed ids take their evaluation id; an unlisted 0 (COCO void) becomes 255.

    Raises:
        ValueError: (naming ``where``) if a non-zero id is not listed.
    """
    segment_ids = np.asarray(segment_ids, dtype=np.int64)
    # Work on the unique ids (few) rather than on every pixel.
    unique, inverse = np.unique(segment_ids, return_inverse=True)
    if ids.size:
        position = np.minimum(np.searchsorted(ids, unique), ids.size - 1)
        found = ids[position] == unique
    else:
        position = np.zeros(unique.shape, dtype=np.int64)
        found = np.zeros(unique.shape, dtype=bool)
    unknown = ~found & (unique != 0)
    if unknown.any():
        raise ValueError(
            f"{where}: segment ids {unique[unknown][:10].tolist()} are not in segments_info "
            f"(listed: {ids[:20].tolist()}{'…' if ids.size > 20 else ''})"
        )
    per_unique = np.where(found, evals[position] if evals.size else IGNORE_INDEX, IGNORE_INDEX).astype(np.uint8)
    return per_unique[inverse.reshape(segment_ids.shape)]


# ---------------------------------------------------------------------------- converters


def convert_panomask_folder(
    in_root: str | os.PathLike,
    out_root: str | os.PathLike,
    *,
    num_classes: int = NUM_CLASSES,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionStats:
    """Converts VIPSeg panomask predictions ``<in_root>/<video>/<frame>.png`` to eval-id PNGs.

    Args:
        in_root: folder of video folders of panomask PNGs (stuff = raw id, thing = id×100+inst).
        out_root: output ``result_submission`` folder.
        num_classes: number of evaluation classes.
        overwrite: rewrite frames whose output exists (default: skip them).
        progress: show a tqdm bar.

    Raises:
        ValueError: if ``in_root`` has no video folders, or a PNG holds a value that is no class.
    """
    in_root, out_root = Path(in_root), Path(out_root)
    if not in_root.is_dir():
        raise ValueError(f"panomask input folder does not exist: {in_root}")
    jobs = [
        (video.name, frame)
        for video in sorted(p for p in in_root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for frame in sorted(p for p in video.glob("*.png") if not p.name.startswith("."))
    ]
    if not jobs:
        raise ValueError(f"no <video>/<frame>.png files under {in_root}")
    stats = ConversionStats(videos=len({video for video, _ in jobs}))
    for video, frame in tqdm(jobs, desc="panomask → semantic", unit="frame", disable=not progress):
        stats.frames += 1
        target = out_root / video / _output_name(frame.name)
        if target.exists() and not overwrite:
            stats.skipped += 1
            continue
        panoptic = _read_panomask(frame)
        try:
            eval_ids = vipseg_panoptic_to_eval(panoptic, num_classes)
        except ValueError as error:
            raise ValueError(f"{frame}: {error}") from error
        _write_eval_ids(target, eval_ids)
        stats.written += 1
    return stats


def _segments_list(value: object, where: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{where}: 'segments_info' must be a list, got {type(value).__name__}")
    return value


def _frames_from_json(data: object, json_path: Path) -> list[tuple[str, str, list, str]]:
    """(video, file_name, segments_info, where) for every frame entry of a prediction JSON."""
    if isinstance(data, Mapping):
        entries = data.get("annotations")
    else:
        entries = data
    if not isinstance(entries, list):
        raise ValueError(f"{json_path}: expected a top-level 'annotations' list")
    frames: list[tuple[str, str, list, str]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ValueError(f"{json_path}: annotations[{index}] is not an object")
        video_key = entry.get("video_id", entry.get("video_name"))
        if "annotations" in entry:  # VIPSeg VPS format (DVIS / DVIS++ / CAVIS): one entry per video
            if video_key is None:
                raise ValueError(f"{json_path}: annotations[{index}] has no video_id")
            if not isinstance(entry["annotations"], list):
                raise ValueError(f"{json_path}: annotations[{index}].annotations must be a list of frames")
            for frame_index, frame in enumerate(entry["annotations"]):
                locator = f"{json_path} annotations[{index}].annotations[{frame_index}]"
                if not isinstance(frame, Mapping) or "file_name" not in frame or "segments_info" not in frame:
                    raise ValueError(f"{locator} (video {video_key}): needs 'file_name' and 'segments_info'")
                where = f"{locator} (video {video_key}, file_name {frame['file_name']})"
                segments = _segments_list(frame["segments_info"], where)
                frames.append((str(video_key), str(frame["file_name"]), segments, where))
        elif "segments_info" in entry and "file_name" in entry:  # image-level COCO panoptic entry
            file_name = PurePosixPath(str(entry["file_name"]).replace("\\", "/"))
            video = str(video_key) if video_key is not None else file_name.parent.as_posix()
            if video_key is None and video in ("", "."):
                raise ValueError(f"{json_path}: annotations[{index}] gives no video (no video_id, bare file_name)")
            name = file_name.name if video_key is None else str(entry["file_name"])
            where = f"{json_path} annotations[{index}] (video {video}, file_name {entry['file_name']})"
            frames.append((video, name, _segments_list(entry["segments_info"], where), where))
        else:
            raise ValueError(
                f"{json_path}: annotations[{index}] has neither per-frame 'annotations' nor 'segments_info'"
            )
    return frames


def _convert_frames(
    frames: list[_Frame],
    out_root: Path,
    category_offset: int,
    category_map: Mapping[int, int] | None,
    num_classes: int,
    duplicate_categories: DuplicateCategories,
    overwrite: bool,
    progress: bool,
    desc: str,
) -> ConversionStats:
    _check_distinct_pngs(frames)
    stats = ConversionStats(videos=len({video for video, *_ in frames}))
    for video, png_path, segments_info, where in tqdm(frames, desc=desc, unit="frame", disable=not progress):
        stats.frames += 1
        target = out_root / video / _output_name(png_path.name)
        if target.exists() and not overwrite:
            stats.skipped += 1
            continue
        ids, evals, merged = _segment_table(
            segments_info, category_offset, category_map, num_classes, where, duplicate_categories
        )
        segment_ids = read_segment_png(png_path)  # (H, W) int64
        eval_ids = segment_ids_to_eval(segment_ids, ids, evals, where=f"{png_path} ({where})")  # (H, W) uint8
        _write_eval_ids(target, eval_ids)
        stats.written += 1
        stats.merged_duplicates += merged
    return stats


def convert_coco_panoptic(
    json_path: str | os.PathLike,
    png_root: str | os.PathLike,
    out_root: str | os.PathLike,
    category_offset: int = 0,
    category_map: str | os.PathLike | Mapping | Sequence | None = None,
    *,
    num_classes: int = NUM_CLASSES,
    duplicate_categories: DuplicateCategories = "error",
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionStats:
    """Converts COCO-style video panoptic predictions (DVIS / DVIS++ / CAVIS VPS output).

    Args:
        json_path: prediction JSON (``{"annotations": [{"video_id", "annotations": [{"file_name",
            "segments_info"}]}]}``, or image-level COCO panoptic entries).
        png_root: folder holding ``<video_id>/<frame>.png`` RGB PNGs (segment id = rgb2id); a
            frame's PNG is found from its ``file_name`` by :func:`png_candidates` (DVIS writes
            the image's name, ``<frame>.jpg``).
        out_root: output ``result_submission`` folder.
        category_offset: evaluation id = category_id − category_offset (no map given).
        category_map: explicit category → eval id map (dict, list or JSON path); overrides offset.
        num_classes: number of evaluation classes.
        duplicate_categories: a segment id listed twice in a frame with different categories:
            ``"error"``, or keep the ``"first"`` / ``"last"`` entry (same categories always merge).
        overwrite: rewrite frames whose output exists (default: skip them).
        progress: show a tqdm bar.

    Raises:
        ValueError: naming the file, on a malformed JSON, a missing PNG (listing the paths tried;
            checked for all frames before any is written), two entries of one PNG, an unlisted
            segment id, a conflicting duplicate segment id or a category outside the range.
    """
    json_path, png_root, out_root = Path(json_path), Path(png_root), Path(out_root)
    _check_duplicate_policy(duplicate_categories)
    with open(json_path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{json_path}: not valid JSON: {error}") from error
    mapping = load_category_map(category_map)
    frames = [
        (video, _resolve_png(png_root / video, name, where), segments, where)
        for video, name, segments, where in _frames_from_json(data, json_path)
    ]
    if not frames:
        raise ValueError(f"{json_path}: lists no frames")
    return _convert_frames(
        frames,
        out_root,
        category_offset,
        mapping,
        num_classes,
        duplicate_categories,
        overwrite,
        progress,
        "COCO panoptic → semantic",
    )


def _video_folder_frames(video: str, video_dir: Path) -> list[_Frame]:
    shared = video_dir / "segments_info.json"
    if shared.is_file():
        with open(shared) as handle:
            data = json.load(handle)
        if isinstance(data, Mapping) and "annotations" in data:
            data = data["annotations"]
        named: list[tuple[str, object, str]] = []  # (file_name or stem, segments_info, where)
        if isinstance(data, Mapping):
            named = [(str(key), segments, f"{shared} [{key!r}]") for key, segments in data.items()]
        elif isinstance(data, list):
            for index, entry in enumerate(data):
                if not isinstance(entry, Mapping) or "file_name" not in entry or "segments_info" not in entry:
                    raise ValueError(f"{shared}: entry {index} needs 'file_name' and 'segments_info'")
                where = f"{shared} entry {index} ({entry['file_name']})"
                named.append((str(entry["file_name"]), entry["segments_info"], where))
        else:
            raise ValueError(f"{shared}: expected a list of frames or an object keyed by frame")
        frames = [
            (video, _resolve_png(video_dir, name, where), _segments_list(segments, where), where)
            for name, segments, where in named
        ]
        return sorted(frames, key=lambda frame: frame[1].name)
    frames = []
    for png in sorted(p for p in video_dir.glob("*.png") if not p.name.startswith(".")):
        sidecar = png.with_suffix(".json")
        if not sidecar.is_file():
            raise ValueError(f"{png}: no segments_info ({shared.name} or {sidecar.name}) in {video_dir}")
        with open(sidecar) as handle:
            data = json.load(handle)
        segments = data.get("segments_info") if isinstance(data, Mapping) else data
        frames.append((video, png, _segments_list(segments, str(sidecar)), str(sidecar)))
    return frames


def convert_coco_panoptic_folder(
    in_root: str | os.PathLike,
    out_root: str | os.PathLike,
    category_offset: int = 0,
    category_map: str | os.PathLike | Mapping | Sequence | None = None,
    *,
    num_classes: int = NUM_CLASSES,
    duplicate_categories: DuplicateCategories = "error",
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionStats:
    """Converts per-video COCO panoptic folders: ``<in_root>/<video>/<frame>.png`` RGB plus
    ``<video>/segments_info.json`` or one ``<frame>.json`` per frame (see the module doc).
    Arguments and errors as :func:`convert_coco_panoptic`."""
    in_root, out_root = Path(in_root), Path(out_root)
    _check_duplicate_policy(duplicate_categories)
    if not in_root.is_dir():
        raise ValueError(f"COCO panoptic input folder does not exist: {in_root}")
    mapping = load_category_map(category_map)
    frames = [
        frame
        for video in sorted(p for p in in_root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for frame in _video_folder_frames(video.name, video)
    ]
    if not frames:
        raise ValueError(f"no <video>/<frame>.png frames with segments_info under {in_root}")
    return _convert_frames(
        frames,
        out_root,
        category_offset,
        mapping,
        num_classes,
        duplicate_categories,
        overwrite,
        progress,
        "COCO panoptic → semantic",
    )


# ---------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vssam2.panoptic",
        description="Convert video panoptic predictions to semantic prediction folders (eval ids, 255 = none).",
    )
    sub = parser.add_subparsers(dest="format", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output", required=True, help="output <video>/<frame>.png folder")
    common.add_argument("--num-classes", type=int, default=NUM_CLASSES)
    common.add_argument("--overwrite", action="store_true", help="rewrite frames whose output exists")
    common.add_argument("--no-progress", action="store_true")
    pano = sub.add_parser("panomask", parents=[common], help="VIPSeg panomask PNGs (category×100+instance)")
    pano.add_argument("--input", required=True, help="folder of <video>/<frame>.png panomasks")
    coco = sub.add_parser("coco", parents=[common], help="COCO panoptic RGB PNGs + segments_info JSON")
    coco.add_argument("--json", help="prediction JSON (DVIS / DVIS++ / CAVIS pred.json); needs --png-root")
    coco.add_argument("--png-root", help="folder of <video_id>/<frame>.png RGB PNGs (DVIS: pan_pred)")
    coco.add_argument("--input", help="per-video folders with segments_info.json or <frame>.json (instead of --json)")
    coco.add_argument("--category-offset", type=int, default=0, help="eval id = category_id - offset (default 0)")
    coco.add_argument("--category-map", help="JSON: {category_id: eval_id} or a list by category id")
    coco.add_argument(
        "--duplicate-categories",
        choices=_DUPLICATE_CATEGORIES,
        default="error",
        help="a segment id listed twice in a frame with different categories: error (default), or keep the "
        "first entry (as eval_vpq_vspw.py) or the last (as eval_stq_vspw.py); same-category repeats always merge",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> ConversionStats:
    """Command-line entry point; prints and returns the :class:`ConversionStats`."""
    parser = _parser()
    args = parser.parse_args(argv)
    options = dict(num_classes=args.num_classes, overwrite=args.overwrite, progress=not args.no_progress)
    if args.format == "panomask":
        stats = convert_panomask_folder(args.input, args.output, **options)
    elif args.json is not None:
        if args.png_root is None or args.input is not None:
            parser.error("coco: --json needs --png-root (and no --input)")
        stats = convert_coco_panoptic(
            args.json,
            args.png_root,
            args.output,
            args.category_offset,
            args.category_map,
            duplicate_categories=args.duplicate_categories,
            **options,
        )
    elif args.input is not None:
        stats = convert_coco_panoptic_folder(
            args.input,
            args.output,
            args.category_offset,
            args.category_map,
            duplicate_categories=args.duplicate_categories,
            **options,
        )
    else:
        parser.error("coco: give --json FILE --png-root DIR, or --input DIR")
    print(json.dumps(asdict(stats)))
    return stats


if __name__ == "__main__":
    main()
