"""Panoptic → semantic converters: VIPSeg panomask and COCO panoptic (DVIS / CAVIS VPS format)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vssam2.labels import IGNORE_INDEX
from vssam2.panoptic import (
    ConversionStats,
    convert_coco_panoptic,
    convert_coco_panoptic_folder,
    convert_panomask_folder,
    main,
    rgb2id,
)

REPO = Path(__file__).resolve().parents[1]

# A 6×8 frame: two stuff regions (raw 1 and raw 21), two instances of thing class raw 61, void.
PANOMASK = np.array(
    [
        [1, 1, 1, 1, 21, 21, 21, 21],
        [1, 1, 1, 1, 21, 21, 21, 21],
        [1, 6100, 6100, 1, 21, 6101, 6101, 21],
        [1, 6100, 6100, 1, 21, 6101, 6101, 21],
        [0, 0, 1, 1, 21, 21, 0, 0],
        [0, 0, 1, 1, 21, 21, 0, 0],
    ],
    dtype=np.uint16,
)
# Expected evaluation ids: raw k → k − 1, void → 255.
EXPECTED = np.array(
    [
        [0, 0, 0, 0, 20, 20, 20, 20],
        [0, 0, 0, 0, 20, 20, 20, 20],
        [0, 60, 60, 0, 20, 60, 60, 20],
        [0, 60, 60, 0, 20, 60, 60, 20],
        [255, 255, 0, 0, 20, 20, 255, 255],
        [255, 255, 0, 0, 20, 20, 255, 255],
    ],
    dtype=np.uint8,
)
# COCO segment ids standing for each panomask value; large ids exercise the G and B channels.
SEGMENT_OF = {0: 0, 1: 5, 21: 300, 6100: 70_001, 6101: 70_002}
# 0-based model categories in the 124-class order (= evaluation ids).
CATEGORY_OF = {5: 0, 300: 20, 70_001: 60, 70_002: 60}


def _segment_ids(panomask: np.ndarray = PANOMASK) -> np.ndarray:
    ids = np.zeros(panomask.shape, dtype=np.int64)
    for value, segment in SEGMENT_OF.items():
        ids[panomask == value] = segment
    return ids


def _id2rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def _segments_info(offset: int = 0, skip: int | None = None) -> list[dict]:
    return [
        {"id": segment, "category_id": category + offset, "iscrowd": 0, "area": 1}
        for segment, category in CATEGORY_OF.items()
        if segment != skip
    ]


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image)


def _write_coco(root: Path, offset: int = 0, frames=("00000", "00001"), videos=("vid_a", "12")) -> tuple[Path, Path]:
    """DVIS-style output: pan_pred/<video_id>/<frame>.png + pred.json; frame 1 is flipped."""
    png_root = root / "pan_pred"
    annotations = []
    for video in videos:
        (png_root / video).mkdir(parents=True)
        frame_entries = []
        for index, frame in enumerate(frames):
            ids = _segment_ids(np.fliplr(PANOMASK) if index % 2 else PANOMASK)
            Image.fromarray(_id2rgb(ids)).save(png_root / video / f"{frame}.png")
            frame_entries.append({"file_name": f"{frame}.png", "segments_info": _segments_info(offset)})
        video_id = int(video) if video.isdigit() else video
        annotations.append({"video_id": video_id, "annotations": frame_entries})
    json_path = root / "pred.json"
    json_path.write_text(json.dumps({"annotations": annotations}))
    return json_path, png_root


def test_rgb2id_matches_coco_formula():
    ids = np.array([[0, 1, 255], [256, 65_535, 16_777_215]], dtype=np.int64)
    np.testing.assert_array_equal(rgb2id(_id2rgb(ids)), ids)


@pytest.mark.parametrize("bits", [16, 8])
def test_panomask_folder(tmp_path: Path, bits: int):
    src, out = tmp_path / "pano", tmp_path / "out"
    (src / "v1").mkdir(parents=True)
    (src / "v2").mkdir(parents=True)
    if bits == 16:
        Image.fromarray(PANOMASK).save(src / "v1" / "0001.png")
        with Image.open(src / "v1" / "0001.png") as image:
            assert image.mode in ("I;16", "I")
        Image.fromarray(np.flipud(PANOMASK)).save(src / "v2" / "0007.png")
        expected = {("v1", "0001"): EXPECTED, ("v2", "0007"): np.flipud(EXPECTED)}
    else:  # stuff-only 8-bit masks
        stuff = np.where(PANOMASK > 124, 1, PANOMASK).astype(np.uint8)
        Image.fromarray(stuff).save(src / "v1" / "0001.png")
        Image.fromarray(stuff).save(src / "v2" / "0007.png")
        want = np.where(PANOMASK > 124, 0, EXPECTED).astype(np.uint8)
        expected = {("v1", "0001"): want, ("v2", "0007"): want}
    stats = convert_panomask_folder(src, out, progress=False)
    assert stats == ConversionStats(videos=2, frames=2, written=2, skipped=0)
    for (video, frame), want in expected.items():
        np.testing.assert_array_equal(_read(out / video / f"{frame}.png"), want)


def test_panomask_bad_value_names_file(tmp_path: Path):
    (tmp_path / "pano" / "v").mkdir(parents=True)
    bad = PANOMASK.copy()
    bad[0, 0] = 200  # a thing value whose category (2) is fine …
    bad[0, 1] = 12_500  # … and category 125: no VIPSeg class
    Image.fromarray(bad).save(tmp_path / "pano" / "v" / "f.png")
    with pytest.raises(ValueError, match=r"v[/\\]f\.png"):
        convert_panomask_folder(tmp_path / "pano", tmp_path / "out", progress=False)


@pytest.mark.parametrize("offset", [0, 1])
def test_coco_panoptic_json(tmp_path: Path, offset: int):
    json_path, png_root = _write_coco(tmp_path, offset=offset)
    out = tmp_path / "out"
    stats = convert_coco_panoptic(json_path, png_root, out, category_offset=offset, progress=False)
    assert stats == ConversionStats(videos=2, frames=4, written=4, skipped=0)
    for video in ("vid_a", "12"):
        np.testing.assert_array_equal(_read(out / video / "00000.png"), EXPECTED)
        np.testing.assert_array_equal(_read(out / video / "00001.png"), np.fliplr(EXPECTED))


def test_coco_category_map_and_unlisted_void(tmp_path: Path):
    json_path, png_root = _write_coco(tmp_path, offset=1000, frames=("00000",), videos=("v",))
    map_path = tmp_path / "map.json"
    # model categories 1000/1020/1060 → eval 3/4/255 (the thing class dropped to "no prediction").
    map_path.write_text(json.dumps({"1000": 3, "1020": 4, "1060": None}))
    convert_coco_panoptic(json_path, png_root, tmp_path / "out", category_map=map_path, progress=False)
    want = np.select([EXPECTED == 0, EXPECTED == 20], [3, 4], IGNORE_INDEX).astype(np.uint8)
    np.testing.assert_array_equal(_read(tmp_path / "out" / "v" / "00000.png"), want)


def test_coco_unknown_segment_id_names_file(tmp_path: Path):
    json_path, png_root = _write_coco(tmp_path, frames=("00000",), videos=("v",))
    data = json.loads(json_path.read_text())
    data["annotations"][0]["annotations"][0]["segments_info"] = _segments_info(skip=70_002)
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"v[/\\]00000\.png.*70002"):
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", progress=False)


def test_coco_category_out_of_range_names_file(tmp_path: Path):
    json_path, png_root = _write_coco(tmp_path, offset=1, frames=("00000",), videos=("v",))
    data = json.loads(json_path.read_text())
    segments = data["annotations"][0]["annotations"][0]["segments_info"]
    # 1-based categories read with offset 0: category 124 gives eval id 124, not < 124.
    segments[0]["category_id"] = 124
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"pred\.json.*00000\.png.*category_id 124"):
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", category_offset=0, progress=False)
    # category 0 with offset 1 gives eval id -1.
    segments[0]["category_id"] = 0
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"pred\.json.*category_id 0 gives evaluation id -1"):
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", category_offset=1, progress=False)
    with pytest.raises(ValueError, match=r"pred\.json.*not in the category map"):
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", category_map={0: 0}, progress=False)
    assert not (tmp_path / "out").exists()


def test_coco_missing_png_names_file(tmp_path: Path):
    json_path, png_root = _write_coco(tmp_path, frames=("00000", "00001"), videos=("v",))
    (png_root / "v" / "00001.png").unlink()
    with pytest.raises(ValueError, match=r"missing panoptic PNG.*v[/\\]00001\.png"):
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", progress=False)


def test_coco_per_video_folders(tmp_path: Path):
    src = tmp_path / "in"
    ids = _segment_ids()
    # video "shared": one segments_info.json for all frames; video "sidecar": <frame>.json each.
    (src / "shared").mkdir(parents=True)
    (src / "sidecar").mkdir(parents=True)
    for frame in ("a", "b"):
        Image.fromarray(_id2rgb(ids)).save(src / "shared" / f"{frame}.png")
        Image.fromarray(_id2rgb(ids)).save(src / "sidecar" / f"{frame}.png")
        (src / "sidecar" / f"{frame}.json").write_text(json.dumps({"segments_info": _segments_info(1)}))
    (src / "shared" / "segments_info.json").write_text(
        json.dumps([{"file_name": f"{f}.png", "segments_info": _segments_info(1)} for f in ("a", "b")])
    )
    stats = convert_coco_panoptic_folder(src, tmp_path / "out", category_offset=1, progress=False)
    assert stats.written == 4
    for video in ("shared", "sidecar"):
        for frame in ("a", "b"):
            np.testing.assert_array_equal(_read(tmp_path / "out" / video / f"{frame}.png"), EXPECTED)


def test_resumable_skips_existing(tmp_path: Path):
    json_path, png_root = _write_coco(tmp_path)
    out = tmp_path / "out"
    first = convert_coco_panoptic(json_path, png_root, out, progress=False)
    assert first.written == 4
    # A stale output is kept on resume, rewritten with overwrite=True; no temp files left.
    stale = out / "vid_a" / "00000.png"
    Image.fromarray(np.full(EXPECTED.shape, 7, dtype=np.uint8)).save(stale)
    second = convert_coco_panoptic(json_path, png_root, out, progress=False)
    assert (second.written, second.skipped) == (0, 4)
    assert (_read(stale) == 7).all()
    third = convert_coco_panoptic(json_path, png_root, out, overwrite=True, progress=False)
    assert third.written == 4
    np.testing.assert_array_equal(_read(stale), EXPECTED)
    assert not [p for p in out.rglob(".*")]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture):
    json_path, png_root = _write_coco(tmp_path, offset=1, frames=("00000",), videos=("v",))
    stats = main(
        ["coco", "--json", str(json_path), "--png-root", str(png_root), "--output", str(tmp_path / "out"),
         "--category-offset", "1", "--no-progress"]
    )
    assert stats.written == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"] == 1
    np.testing.assert_array_equal(_read(tmp_path / "out" / "v" / "00000.png"), EXPECTED)

    (tmp_path / "pano" / "v").mkdir(parents=True)
    Image.fromarray(PANOMASK).save(tmp_path / "pano" / "v" / "00000.png")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", "vssam2.panoptic", "panomask", "--input", str(tmp_path / "pano"),
         "--output", str(tmp_path / "out_pano")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"videos": 1, "frames": 1, "written": 1, "skipped": 0}
    np.testing.assert_array_equal(_read(tmp_path / "out_pano" / "v" / "00000.png"), EXPECTED)
