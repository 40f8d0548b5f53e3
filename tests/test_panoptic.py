"""Panoptic → semantic converters: VIPSeg panomask and COCO panoptic (DVIS / DVIS++ / CAVIS VPS format).

The COCO fixtures write exactly what the VIPSeg writer of DVIS writes
(``VPSEvaluator.process`` / ``evaluate`` in ``dvis/data_video/vps_eval.py`` of zhang-tao-whu/DVIS;
DVIS++ ``DVIS_Plus/dvis_Plus/data_video/vps_eval.py`` and CAVIS ``cavis/data_video/vps_eval.py``
are the same code): ``pan_pred/<video_id>/<image stem>.png`` RGB with colours from panopticapi's
``IdGenerator``, and ``pred.json`` whose frames carry the *image's* name (``.jpg``).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import run_command
from PIL import Image

from vssam2.labels import IGNORE_INDEX
from vssam2.panoptic import (
    ConversionStats,
    convert_coco_panoptic,
    convert_coco_panoptic_folder,
    convert_panomask_folder,
    main,
    png_candidates,
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

# VIPSeg categories as DVIS registers them (dvis/data_video/datasets/vps.py): the dataset id is
# the VIPSeg category id (raw − 1 = our evaluation id), stuff colours are fixed per category.
VIPSEG_CATEGORIES = {
    0: {"id": 0, "name": "wall", "isthing": 0, "color": [120, 120, 120]},
    20: {"id": 20, "name": "crosswalk", "isthing": 0, "color": [0, 102, 200]},
    60: {"id": 60, "name": "person", "isthing": 1, "color": [11, 200, 200]},
}
# The model's segments: panoptic id in the model output → (dataset category id, isthing).
MODEL_SEGMENTS = {1: (0, 0), 2: (20, 0), 3: (60, 1), 4: (60, 1)}
MODEL_ID_OF = {0: 0, 1: 1, 21: 2, 6100: 3, 6101: 4}  # panomask value → model segment id
VIDEOS = ("12_n-ytHkMceew", "1241_qYvEuwrSiXc")  # VIPSeg video names (the writer's video_id)
FRAMES = ("00000000.jpg", "00000001.jpg", "00000002.jpg")
# Frame 1 is mirrored; in frame 2 the second person is gone (crosswalk there), so DVIS lists
# only the segments with pixels in that frame.
FRAME_PANOMASKS = (PANOMASK, np.fliplr(PANOMASK), np.where(PANOMASK == 6101, 21, PANOMASK))
FRAME_EXPECTED = (EXPECTED, np.fliplr(EXPECTED), np.where(PANOMASK == 6101, 20, EXPECTED).astype(np.uint8))


class PanopticapiIdGenerator:
    """panopticapi.utils.IdGenerator (cocodataset/panopticapi), with a seeded generator."""

    def __init__(self, categories: dict[int, dict], rng: np.random.RandomState):
        self.taken_colors = set([0, 0, 0])  # panopticapi's own (buggy) initialiser: the set {0}
        self.categories = categories
        self.rng = rng
        for category in self.categories.values():
            if category["isthing"] == 0:
                self.taken_colors.add(tuple(category["color"]))

    def get_color(self, cat_id: int):
        category = self.categories[cat_id]
        if category["isthing"] == 0:
            return category["color"]
        base_color_array = category["color"]
        base_color = tuple(base_color_array)
        if base_color not in self.taken_colors:
            self.taken_colors.add(base_color)
            return base_color
        while True:
            new_color = base_color_array + self.rng.randint(low=-30, high=31, size=3)
            color = tuple(np.maximum(0, np.minimum(255, new_color)))
            if color not in self.taken_colors:
                self.taken_colors.add(color)
                return color


def _coco_rgb2id(color) -> int:
    """panopticapi.utils.rgb2id of one colour: R + 256·G + 256²·B."""
    return int(color[0] + 256 * color[1] + 256 * 256 * color[2])


def dvis_vps_eval(
    output_dir: Path,
    videos: dict[str, tuple[list[str], np.ndarray, list[dict]]],
    seed: int = 0,
) -> Path:
    """Writes what DVIS's ``VPSEvaluator`` writes for each video, then its ``pred.json``.

    Args:
        output_dir: the evaluator's output_dir (gets ``pan_pred/`` and ``pred.json``).
        videos: video_id → (``inputs[0]['file_names']`` of the frames, (T, H, W) int model
            panoptic ids ``outputs['pred_masks']``, ``outputs['segments_infos']`` with
            ``id`` / ``isthing`` / ``category_id``). ``category_id`` is given as the dataset id,
            i.e. after the writer's contiguous → dataset id lookup.
        seed: seed of the thing colour jitter.

    Returns:
        The path of pred.json.
    """
    rng = np.random.RandomState(seed)
    predictions = []
    for video_id, (image_names, pan_seg_result, segments_infos) in videos.items():
        color_generator = PanopticapiIdGenerator(VIPSEG_CATEGORIES, rng)
        pan_format = np.zeros((*pan_seg_result.shape, 3), dtype=np.uint8)  # (T, H, W, 3)
        segments_infos_ = []
        for segments_info in segments_infos:
            sem = segments_info["category_id"]
            mask = pan_seg_result == segments_info["id"]
            color = color_generator.get_color(sem)
            pan_format[mask] = color
            dts = []
            dt_ = {"category_id": int(sem), "iscrowd": 0, "id": _coco_rgb2id(color)}
            for i in range(pan_format.shape[0]):
                area = mask[i].sum()
                index = np.where(mask[i])
                if len(index[0]) == 0 or area == 0:
                    dts.append(None)
                else:
                    x, y = index[1].min(), index[0].min()
                    width, height = index[1].max() - x, index[0].max() - y
                    dt = {"bbox": [x.item(), y.item(), width.item(), height.item()], "area": int(area)}
                    dt.update(dt_)
                    dts.append(dt)
            segments_infos_.append(dts)
        annotations = []
        for i, image_name in enumerate(image_names):
            (output_dir / "pan_pred" / video_id).mkdir(parents=True, exist_ok=True)
            png_name = image_name.split("/")[-1].split(".")[0] + ".png"
            Image.fromarray(pan_format[i]).save(output_dir / "pan_pred" / video_id / png_name)
            annotations.append(
                {
                    "segments_info": [item[i] for item in segments_infos_ if item[i] is not None],
                    "file_name": image_name.split("/")[-1],
                }
            )
        predictions.append({"annotations": annotations, "video_id": video_id})
    json_path = output_dir / "pred.json"
    with open(json_path, "w") as handle:
        json.dump({"annotations": predictions}, handle)
    return json_path


def _model_ids(panomask: np.ndarray) -> np.ndarray:
    ids = np.zeros(panomask.shape, dtype=np.int64)
    for value, model_id in MODEL_ID_OF.items():
        ids[panomask == value] = model_id
    return ids


def _model_segments(segments: dict[int, tuple[int, int]] = MODEL_SEGMENTS) -> list[dict]:
    return [{"id": i, "isthing": bool(thing), "category_id": category} for i, (category, thing) in segments.items()]


def _write_dvis(root: Path, videos=VIDEOS, frames=FRAMES, category_shift: int = 0) -> tuple[Path, Path]:
    """DVIS output for ``videos`` × ``frames`` (FRAME_PANOMASKS cycled) under ``root``.

    ``category_shift`` is added to every category_id afterwards, emulating a model with shifted
    (e.g. 1-based) categories; DVIS itself writes 0-based ids (shift 0).
    """
    masks = [_model_ids(FRAME_PANOMASKS[i % len(FRAME_PANOMASKS)]) for i in range(len(frames))]
    videos_in = {
        video: (
            [f"datasets/VIPSeg/VIPSeg_720P/images/{video}/{frame}" for frame in frames],
            np.stack(masks),
            _model_segments(),
        )
        for video in videos
    }
    json_path = dvis_vps_eval(root, videos_in)
    if category_shift:
        data = json.loads(json_path.read_text())
        for video in data["annotations"]:
            for frame in video["annotations"]:
                for segment in frame["segments_info"]:
                    segment["category_id"] += category_shift
        json_path.write_text(json.dumps(data))
    return json_path, root / "pan_pred"


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image)


def _segments(json_path: Path, video: int = 0, frame: int = 0) -> list[dict]:
    return json.loads(json_path.read_text())["annotations"][video]["annotations"][frame]["segments_info"]


# ---------------------------------------------------------------------------- basics


def test_rgb2id_matches_coco_formula():
    ids = np.array([[0, 1, 255], [256, 65_535, 16_777_215]], dtype=np.int64)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65_536], axis=-1).astype(np.uint8)
    np.testing.assert_array_equal(rgb2id(rgb), ids)


def test_png_candidates(tmp_path: Path):
    def names(file_name: str) -> list[str]:
        return [p.relative_to(tmp_path).as_posix() for p in png_candidates(tmp_path, file_name)]

    assert names("00000000.jpg") == ["00000000.png"]  # DVIS: file_name is the image's name
    assert names("00000000.png") == ["00000000.png"]
    assert names("a.b.jpg") == ["a.png", "a.b.png"]  # DVIS cuts at the first dot
    assert names("sub/a.b.png") == ["sub/a.b.png", "a.png", "a.b.png"]
    assert names("images\\v\\f.jpg") == ["f.png"]


# ---------------------------------------------------------------------------- panomask


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


# ---------------------------------------------------------------------------- DVIS / DVIS++ / CAVIS


def test_dvis_fixture_writes_what_dvis_writes(tmp_path: Path):
    """The fixture's own output has DVIS's structure (so the tests below test the real format)."""
    json_path, png_root = _write_dvis(tmp_path)
    data = json.loads(json_path.read_text())
    assert list(data) == ["annotations"]
    assert [list(video) for video in data["annotations"]] == [["annotations", "video_id"]] * len(VIDEOS)
    assert [video["video_id"] for video in data["annotations"]] == list(VIDEOS)
    frames = data["annotations"][0]["annotations"]
    assert [list(frame) for frame in frames] == [["segments_info", "file_name"]] * len(FRAMES)
    assert [frame["file_name"] for frame in frames] == list(FRAMES)  # the .jpg, not the PNG
    assert sorted(p.name for p in (png_root / VIDEOS[0]).iterdir()) == [f[:-4] + ".png" for f in FRAMES]
    segment = frames[0]["segments_info"][0]
    assert list(segment) == ["bbox", "area", "category_id", "iscrowd", "id"]
    # wall: stuff colour (120, 120, 120) → id 120 + 256·120 + 65536·120; bbox x, y, max−min.
    assert segment == {
        "bbox": [0, 0, 3, 5],
        "area": int((PANOMASK == 1).sum()),
        "category_id": 0,
        "iscrowd": 0,
        "id": 120 * (1 + 256 + 65_536),
    }
    people = [s["id"] for s in frames[0]["segments_info"] if s["category_id"] == 60]
    assert people[0] == 11 + 256 * 200 + 65_536 * 200 and people[1] != people[0]  # second person jittered
    assert len(frames[2]["segments_info"]) == 3  # the absent person is not listed
    with Image.open(png_root / VIDEOS[0] / "00000000.png") as image:
        assert image.mode == "RGB"
        rgb = np.asarray(image).astype(np.int64)
    assert (rgb[..., 0] + 256 * rgb[..., 1] + 65_536 * rgb[..., 2])[0, 0] == segment["id"]


@pytest.mark.parametrize("category_shift", [0, 1])
def test_dvis_pred_json(tmp_path: Path, category_shift: int):
    json_path, png_root = _write_dvis(tmp_path, category_shift=category_shift)
    out = tmp_path / "out"
    stats = convert_coco_panoptic(json_path, png_root, out, category_offset=category_shift, progress=False)
    assert stats == ConversionStats(videos=2, frames=6, written=6, skipped=0, merged_duplicates=0)
    for video in VIDEOS:
        assert sorted(p.name for p in (out / video).iterdir()) == ["00000000.png", "00000001.png", "00000002.png"]
        for frame, want in zip(FRAMES, FRAME_EXPECTED):
            np.testing.assert_array_equal(_read(out / video / f"{frame[:-4]}.png"), want)


def test_dvis_missing_png_lists_paths_tried(tmp_path: Path):
    json_path, png_root = _write_dvis(tmp_path)
    (png_root / VIDEOS[1] / "00000001.png").unlink()
    with pytest.raises(ValueError) as error:
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", progress=False)
    message = str(error.value)
    assert "pred.json annotations[1].annotations[1]" in message
    assert "missing panoptic PNG for file_name '00000001.jpg': tried " in message
    assert str(png_root / VIDEOS[1] / "00000001.png") in message
    assert f"{png_root / VIDEOS[1]} holds 2 PNG(s): 00000000.png, 00000002.png" in message
    assert not (tmp_path / "out").exists()  # found before anything was written
    (png_root / VIDEOS[1] / "00000000.png").unlink()
    (png_root / VIDEOS[1] / "00000002.png").unlink()
    (png_root / VIDEOS[1]).rmdir()
    with pytest.raises(ValueError, match=r"00000000\.jpg'.*folder .*1241_qYvEuwrSiXc does not exist"):
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", progress=False)


def test_dvis_multi_dot_names_and_shared_png(tmp_path: Path):
    # DVIS names the PNG after the image name up to its first dot.
    masks = np.stack([_model_ids(PANOMASK)])
    json_path = dvis_vps_eval(tmp_path / "a", {"v": (["images/v/frame.v2.jpg"], masks, _model_segments())})
    assert (tmp_path / "a" / "pan_pred" / "v" / "frame.png").is_file()
    convert_coco_panoptic(json_path, tmp_path / "a" / "pan_pred", tmp_path / "out", progress=False)
    np.testing.assert_array_equal(_read(tmp_path / "out" / "v" / "frame.png"), EXPECTED)
    # Two images whose names agree up to the first dot share one DVIS PNG (the second overwrote
    # the first): refused rather than converting one PNG twice.
    masks = np.stack([_model_ids(PANOMASK), _model_ids(np.fliplr(PANOMASK))])
    json_path = dvis_vps_eval(tmp_path / "b", {"v": (["v/clip.000.jpg", "v/clip.001.jpg"], masks, _model_segments())})
    shared = r"annotations\[0\]\.annotations\[1\].*clip\.png, as .*annotations\[0\]\.annotations\[0\]"
    with pytest.raises(ValueError, match=shared):
        convert_coco_panoptic(json_path, tmp_path / "b" / "pan_pred", tmp_path / "out_b", progress=False)


def _official_semantic(png: Path, segments_info: list[dict], rule: str) -> np.ndarray:
    """Per-pixel category of a prediction frame as the official VIPSeg scripts read it.

    ``"vpq"``: eval_vpq_vspw.py builds ``pred_segms`` keeping the first entry of an id;
    ``"stq"``: eval_stq_vspw.py paints ``prediction_semantic[pan_pred == id_] = cate_id`` for
    every entry in order. Unlisted pixels: 255.
    """
    with Image.open(png) as image:
        pred_pan = np.uint32(np.asarray(image))
    pan_pred = pred_pan[:, :, 0] + pred_pan[:, :, 1] * 256 + pred_pan[:, :, 2] * 256 * 256
    semantic = np.full(pan_pred.shape, 255, dtype=np.int64)
    if rule == "vpq":
        pred_segms: dict[int, dict] = {}
        for el in segments_info:
            if el["id"] in pred_segms:
                pred_segms[el["id"]]["area"] += el["area"]
            else:
                pred_segms[el["id"]] = copy.deepcopy(el)
        for segment_id, el in pred_segms.items():
            semantic[pan_pred == segment_id] = el["category_id"]
    else:
        for el in segments_info:
            semantic[pan_pred == el["id"]] = el["category_id"]
    return semantic.astype(np.uint8)


def test_dvis_same_category_duplicates_merge(tmp_path: Path):
    # Two model segments of one stuff class get the same colour (IdGenerator returns the stuff
    # colour), so DVIS lists that id twice in a frame, with the same category.
    split_wall = {**MODEL_SEGMENTS, 5: (0, 0)}
    masks = []
    for panomask in FRAME_PANOMASKS:
        ids = _model_ids(panomask)
        ids[:2][ids[:2] == 1] = 5  # the wall's top rows are a second wall segment
        masks.append(ids)
    videos = {VIDEOS[0]: ([f"img/{f}" for f in FRAMES], np.stack(masks), _model_segments(split_wall))}
    json_path = dvis_vps_eval(tmp_path, videos)
    wall = [s for s in _segments(json_path) if s["category_id"] == 0]
    assert len(wall) == 2 and wall[0]["id"] == wall[1]["id"]
    stats = convert_coco_panoptic(json_path, tmp_path / "pan_pred", tmp_path / "out", progress=False)
    assert stats.merged_duplicates == len(FRAMES)
    for frame_index, (frame, want) in enumerate(zip(FRAMES, FRAME_EXPECTED)):
        got = _read(tmp_path / "out" / VIDEOS[0] / f"{frame[:-4]}.png")
        np.testing.assert_array_equal(got, want)
        segments = _segments(json_path, frame=frame_index)
        png = tmp_path / "pan_pred" / VIDEOS[0] / f"{frame[:-4]}.png"
        np.testing.assert_array_equal(got, _official_semantic(png, segments, "vpq"))
        np.testing.assert_array_equal(got, _official_semantic(png, segments, "stq"))


def test_conflicting_duplicate_categories(tmp_path: Path):
    json_path, png_root = _write_dvis(tmp_path, videos=(VIDEOS[0],), frames=FRAMES[:1])
    data = json.loads(json_path.read_text())
    segments = data["annotations"][0]["annotations"][0]["segments_info"]
    wall = next(s for s in segments if s["category_id"] == 0)
    segments.append({**wall, "category_id": 20})  # the wall's id again, now as crosswalk
    json_path.write_text(json.dumps(data))
    with pytest.raises(
        ValueError,
        match=r"segment id 7895160 is listed twice, with category_id 0 .* and 20 .*"
        r"eval_vpq_vspw\.py keeps the first entry, eval_stq_vspw\.py the last",
    ):
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    png = png_root / VIDEOS[0] / "00000000.png"
    for policy, rule in (("first", "vpq"), ("last", "stq")):
        out = tmp_path / f"out_{policy}"
        stats = convert_coco_panoptic(json_path, png_root, out, duplicate_categories=policy, progress=False)
        assert stats.merged_duplicates == 1
        got = _read(out / VIDEOS[0] / "00000000.png")
        np.testing.assert_array_equal(got, _official_semantic(png, segments, rule))
    np.testing.assert_array_equal(_read(tmp_path / "out_first" / VIDEOS[0] / "00000000.png"), EXPECTED)
    np.testing.assert_array_equal(
        _read(tmp_path / "out_last" / VIDEOS[0] / "00000000.png"), np.where(EXPECTED == 0, 20, EXPECTED)
    )
    with pytest.raises(ValueError, match="duplicate_categories must be one of"):
        convert_coco_panoptic(json_path, png_root, tmp_path / "x", duplicate_categories="vote", progress=False)


def test_coco_category_map_and_unlisted_void(tmp_path: Path):
    json_path, png_root = _write_dvis(tmp_path, videos=("v",), frames=FRAMES[:1], category_shift=1000)
    map_path = tmp_path / "map.json"
    # model categories 1000/1020/1060 → eval 3/4/255 (the thing class dropped to "no prediction").
    map_path.write_text(json.dumps({"1000": 3, "1020": 4, "1060": None}))
    convert_coco_panoptic(json_path, png_root, tmp_path / "out", category_map=map_path, progress=False)
    want = np.select([EXPECTED == 0, EXPECTED == 20], [3, 4], IGNORE_INDEX).astype(np.uint8)
    np.testing.assert_array_equal(_read(tmp_path / "out" / "v" / "00000000.png"), want)


def test_coco_unknown_segment_id_names_file(tmp_path: Path):
    json_path, png_root = _write_dvis(tmp_path, videos=("v",), frames=FRAMES[:1])
    data = json.loads(json_path.read_text())
    segments = data["annotations"][0]["annotations"][0]["segments_info"]
    dropped = segments.pop()  # the second person: its pixels are in the PNG, unlisted
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"v[/\\]00000000\.png.*pred\.json.*segment ids \[{dropped['id']}\]"):
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", progress=False)


def test_coco_category_out_of_range_names_file(tmp_path: Path):
    json_path, png_root = _write_dvis(tmp_path, videos=("v",), frames=FRAMES[:1], category_shift=1)
    data = json.loads(json_path.read_text())
    segments = data["annotations"][0]["annotations"][0]["segments_info"]
    # 1-based categories read with offset 0: category 124 gives eval id 124, not < 124.
    segments[0]["category_id"] = 124
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"pred\.json.*00000000\.jpg.*category_id 124"):
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", category_offset=0, progress=False)
    # category 0 with offset 1 gives eval id -1.
    segments[0]["category_id"] = 0
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"pred\.json.*category_id 0 gives evaluation id -1"):
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", category_offset=1, progress=False)
    with pytest.raises(ValueError, match=r"pred\.json.*not in the category map"):
        convert_coco_panoptic(json_path, png_root, tmp_path / "out", category_map={0: 0}, progress=False)
    assert not (tmp_path / "out").exists()


def test_coco_image_level_entries(tmp_path: Path):
    # Plain COCO panoptic: one entry per image, the video in file_name's folder or in video_id.
    json_path, png_root = _write_dvis(tmp_path, videos=("v",), frames=FRAMES[:2])
    frames = json.loads(json_path.read_text())["annotations"][0]["annotations"]
    image_level = {
        "annotations": [
            {"file_name": "v/00000000.png", "segments_info": frames[0]["segments_info"]},
            {"video_id": "v", "file_name": "00000001.jpg", "segments_info": frames[1]["segments_info"]},
        ]
    }
    (tmp_path / "image_level.json").write_text(json.dumps(image_level))
    stats = convert_coco_panoptic(tmp_path / "image_level.json", png_root, tmp_path / "out", progress=False)
    assert (stats.videos, stats.written) == (1, 2)
    np.testing.assert_array_equal(_read(tmp_path / "out" / "v" / "00000000.png"), FRAME_EXPECTED[0])
    np.testing.assert_array_equal(_read(tmp_path / "out" / "v" / "00000001.png"), FRAME_EXPECTED[1])


def test_coco_per_video_folders(tmp_path: Path):
    json_path, png_root = _write_dvis(tmp_path / "dvis", videos=("v",), frames=FRAMES[:1], category_shift=1)
    segments = _segments(json_path)
    with Image.open(png_root / "v" / "00000000.png") as image:
        rgb = np.asarray(image)
    src = tmp_path / "in"
    # video "shared": one segments_info.json (naming the images, .jpg); "sidecar": <frame>.json each.
    (src / "shared").mkdir(parents=True)
    (src / "sidecar").mkdir(parents=True)
    for frame in ("a", "b"):
        Image.fromarray(rgb).save(src / "shared" / f"{frame}.png")
        Image.fromarray(rgb).save(src / "sidecar" / f"{frame}.png")
        (src / "sidecar" / f"{frame}.json").write_text(json.dumps({"segments_info": segments}))
    (src / "shared" / "segments_info.json").write_text(
        json.dumps([{"file_name": f"{f}.jpg", "segments_info": segments} for f in ("a", "b")])
    )
    stats = convert_coco_panoptic_folder(src, tmp_path / "out", category_offset=1, progress=False)
    assert stats.written == 4
    for video in ("shared", "sidecar"):
        for frame in ("a", "b"):
            np.testing.assert_array_equal(_read(tmp_path / "out" / video / f"{frame}.png"), EXPECTED)
    (src / "shared" / "b.png").unlink()
    with pytest.raises(
        ValueError, match=r"segments_info\.json entry 1 \(b\.jpg\): missing panoptic PNG.*tried .*b\.png"
    ):
        convert_coco_panoptic_folder(src, tmp_path / "out2", category_offset=1, progress=False)


def test_resumable_skips_existing(tmp_path: Path):
    json_path, png_root = _write_dvis(tmp_path)
    out = tmp_path / "out"
    first = convert_coco_panoptic(json_path, png_root, out, progress=False)
    assert first.written == 6
    # A stale output is kept on resume, rewritten with overwrite=True; no temp files left.
    stale = out / VIDEOS[0] / "00000000.png"
    Image.fromarray(np.full(EXPECTED.shape, 7, dtype=np.uint8)).save(stale)
    second = convert_coco_panoptic(json_path, png_root, out, progress=False)
    assert (second.written, second.skipped) == (0, 6)
    assert (_read(stale) == 7).all()
    third = convert_coco_panoptic(json_path, png_root, out, overwrite=True, progress=False)
    assert third.written == 6
    np.testing.assert_array_equal(_read(stale), EXPECTED)
    assert not [p for p in out.rglob(".*")]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture):
    json_path, png_root = _write_dvis(tmp_path, videos=("v",), frames=FRAMES[:1], category_shift=1)
    data = json.loads(json_path.read_text())
    segments = data["annotations"][0]["annotations"][0]["segments_info"]
    segments.append({**segments[0], "category_id": 21})  # the wall's id again, as crosswalk (1-based)
    json_path.write_text(json.dumps(data))
    stats = main(
        [
            "coco",
            "--json",
            str(json_path),
            "--png-root",
            str(png_root),
            "--output",
            str(tmp_path / "out"),
            "--category-offset",
            "1",
            "--duplicate-categories",
            "first",
            "--no-progress",
        ]
    )
    assert (stats.written, stats.merged_duplicates) == (1, 1)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (printed["written"], printed["merged_duplicates"]) == (1, 1)
    np.testing.assert_array_equal(_read(tmp_path / "out" / "v" / "00000000.png"), EXPECTED)

    (tmp_path / "pano" / "v").mkdir(parents=True)
    Image.fromarray(PANOMASK).save(tmp_path / "pano" / "v" / "00000.png")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    result = run_command(
        "-m",
        "vssam2.panoptic",
        "panomask",
        "--input",
        str(tmp_path / "pano"),
        "--output",
        str(tmp_path / "out_pano"),
        env=env,
        timeout=60,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "videos": 1,
        "frames": 1,
        "written": 1,
        "skipped": 0,
        "merged_duplicates": 0,
    }
    np.testing.assert_array_equal(_read(tmp_path / "out_pano" / "v" / "00000.png"), EXPECTED)
