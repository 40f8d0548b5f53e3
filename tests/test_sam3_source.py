"""SAM 3 masklet source on a tiny random-weight SAM 3 (CPU): the checkpoint folder round trip and its
errors, streaming from memory against transformers' own streaming loop, chunking, windows and
their stitching, the score table's labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from vssam2.masklets.aggregator import aggregate_masks
from vssam2.masklets.cache import cache_key
from vssam2.masklets.sam3_model import (
    LocalCvUtils,
    checkpoint_identity,
    load_sam3,
    tiny_clip_tokenizer,
    write_tiny_sam3,
)
from vssam2.masklets.sam3_video import STAGES, SAM3VideoSource

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W, T = 64, 96, 10
PROMPTS = ["red", "blue box"]
CLASSES = [3, 7]
# Random weights score every detection about 0.25: keep them all, bound the count.
LOOSE = {"score_threshold": 0.0, "new_object_threshold": 0.0, "max_objects": 6}


@pytest.fixture(scope="module")
def tiny_sam3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3") / "tiny")


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """(T, H, W, 3) uint8: a still red rectangle and a blue one moving right on grey."""
    video = torch.full((T, H, W, 3), 90, dtype=torch.uint8)
    video[:, 8:30, 6:40] = torch.tensor([220, 30, 30], dtype=torch.uint8)
    for t in range(T):
        video[t, 34:60, 36 + 3 * t : 66 + 3 * t] = torch.tensor([30, 40, 230], dtype=torch.uint8)
    return video


def _source(folder: Path, **kwargs: Any) -> SAM3VideoSource:
    return SAM3VideoSource(str(folder), PROMPTS, prompt_classes=CLASSES, **{**LOOSE, **kwargs})


def _run(source: SAM3VideoSource, frames: torch.Tensor, chunk: int = T) -> tuple[torch.Tensor, Any]:
    source.begin_video("video", H, W)
    maps = torch.cat([source.add_chunk(frames[s : s + chunk], s) for s in range(0, T, chunk)])
    return maps, source.end_video()


@pytest.fixture(scope="module")
def whole(tiny_sam3: Path, frames: torch.Tensor) -> tuple[torch.Tensor, Any, dict[str, float]]:
    """One window over the whole video, given as one chunk."""
    source = _source(tiny_sam3, window=32)
    maps, table = _run(source, frames)
    return maps, table, dict(source.timings)


class Recorder(SAM3VideoSource):
    """Records every frame's raw objects (before painting) and their masklet ids."""

    def _begin(self) -> None:
        super()._begin()
        self.frames: list[dict[str, Any]] = []

    def _frame_objects(self, session, out):
        obj_ids, masks, scores, classes = super()._frame_objects(session, out)
        self.frames.append({"obj_ids": obj_ids, "masks": masks.clone(), "classes": classes.clone()})
        return obj_ids, masks, scores, classes

    def _process_frame(self, pixel_values: torch.Tensor, t: int) -> torch.Tensor:
        segments = super()._process_frame(pixel_values, t)
        record = self.frames[-1]
        record["ids"] = [self._masklet_of[obj] for obj in record["obj_ids"]]
        return segments


# ------------------------------------------------------------------------------ checkpoint folder


def test_tiny_checkpoint_round_trip(tiny_sam3: Path) -> None:
    names = {p.name for p in tiny_sam3.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= names
    assert json.loads((tiny_sam3 / "config.json").read_text())["model_type"] == "sam3_video"
    model, processor = load_sam3(tiny_sam3)
    again = write_tiny_sam3(tiny_sam3.parent / "again", seed=0)
    other, _ = load_sam3(again)
    reference = other.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    tokens = processor.tokenizer.convert_ids_to_tokens(processor.tokenizer("Red  CAR").input_ids)
    assert tokens == ["<|startoftext|>", "red</w>", "car</w>", "<|endoftext|>"]  # lowercased, merged, wrapped
    assert len(tiny_clip_tokenizer()) <= model.config.detector_config.text_config.vocab_size
    # Transformers' hub-fetched post-processing is replaced by the local one.
    from transformers.models.sam3_video import modeling_sam3_video

    assert isinstance(modeling_sam3_video.cv_utils_kernel, LocalCvUtils)


def _copy(src: Path, dst: Path, names: list[str]) -> Path:
    dst.mkdir()
    for name in names:
        shutil.copy(src / name, dst / name)
    return dst


def test_bad_folders(tiny_sam3: Path, tmp_path: Path) -> None:
    hint = r"huggingface-cli download facebook/sam3 --local-dir"
    absent = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match=rf"(?s){absent}.*does not exist.*{hint}"):
        load_sam3(absent)
    with pytest.raises(NotADirectoryError, match=r"is a file; pass the checkpoint folder"):
        load_sam3(tiny_sam3 / "model.safetensors")
    empty = _copy(tiny_sam3, tmp_path / "empty", [])
    with pytest.raises(FileNotFoundError, match=rf"(?s){empty}.*no config.json.*{hint}"):
        load_sam3(empty)
    sam2 = tmp_path / "sam2"
    sam2.mkdir()
    (sam2 / "config.json").write_text(json.dumps({"model_type": "sam2_video"}))
    with pytest.raises(ValueError, match=r"(?s)model_type 'sam2_video', but 'sam3_video'.*facebook/sam3"):
        load_sam3(sam2)
    (sam2 / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"not a readable JSON file"):
        load_sam3(sam2)
    no_weights = _copy(tiny_sam3, tmp_path / "no_weights", ["config.json", "processor_config.json", "tokenizer.json"])
    with pytest.raises(FileNotFoundError, match=rf"(?s){no_weights}.*no weights.*model.safetensors.*{hint}"):
        load_sam3(no_weights)
    sharded = _copy(tiny_sam3, tmp_path / "sharded", ["config.json", "processor_config.json", "tokenizer.json"])
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match=r"lists 2 weight shards but 2 are missing"):
        load_sam3(sharded)
    no_processor = _copy(tiny_sam3, tmp_path / "no_processor", ["config.json", "model.safetensors"])
    with pytest.raises(FileNotFoundError, match=rf"(?s){no_processor}.*processor config.*tokenizer.*{hint}"):
        load_sam3(no_processor)
    no_tokenizer = _copy(
        tiny_sam3, tmp_path / "no_tokenizer", ["config.json", "model.safetensors", "processor_config.json"]
    )
    with pytest.raises(FileNotFoundError, match=r"not the tokenizer \(tokenizer.json, or vocab.json \+ merges.txt\)"):
        load_sam3(no_tokenizer)
    # The source checks its folder when the model loads (its first video), so configs naming a
    # folder this machine lacks still parse and expand into sweeps.
    lazy = SAM3VideoSource(str(absent), PROMPTS)
    assert lazy.config()["checkpoint"]["missing"]
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        lazy.begin_video("video", H, W)


def test_bad_prompts(tiny_sam3: Path) -> None:
    with pytest.raises(ValueError, match=r"at least one text prompt"):
        SAM3VideoSource(str(tiny_sam3), [])
    # a string is a prompt file
    with pytest.raises(FileNotFoundError, match=r"car: no such prompt file"):
        SAM3VideoSource(str(tiny_sam3), "car")
    with pytest.raises(ValueError, match=r"'Red car' and 'red  car' are the same text"):
        SAM3VideoSource(str(tiny_sam3), ["Red car", "red  car"])
    with pytest.raises(ValueError, match=r"2 prompts but 1 prompt_classes"):
        SAM3VideoSource(str(tiny_sam3), PROMPTS, prompt_classes=[1])
    with pytest.raises(ValueError, match=r"non-negative ints"):
        SAM3VideoSource(str(tiny_sam3), PROMPTS, prompt_classes=[1, -2])
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        SAM3VideoSource(str(tiny_sam3), PROMPTS, dtype="float16")
    with pytest.raises(ValueError, match=r"prompt_classes \[200\] are not class ids of a dataset of 124"):
        SAM3VideoSource(str(tiny_sam3), PROMPTS, prompt_classes=[1, 200])
    with pytest.raises(ValueError, match=r"prompt_classes goes with a list of prompts"):
        SAM3VideoSource(str(tiny_sam3), None, prompt_classes=[1])
    source = SAM3VideoSource(str(tiny_sam3), ["a " * 40])
    with pytest.raises(ValueError, match=r"tokens long; SAM 3's text encoder takes at most 32"):
        source.begin_video("video", H, W)


def test_prompts_from_a_file_or_the_class_names(tiny_sam3: Path, tmp_path: Path) -> None:
    from vssam2.masklets.prompts import load_prompts

    shipped = REPO / "configs" / "prompts" / "vspw.yaml"
    source = SAM3VideoSource(str(tiny_sam3), str(shipped))
    want = load_prompts(shipped, 124)
    assert source.prompts == list(want.prompts) and source.prompt_classes == list(want.prompt_class)
    assert set(source.prompt_classes) == set(range(124))  # every class is prompted
    every = SAM3VideoSource(str(tiny_sam3))  # None: each class by name
    assert len(every.prompts) >= 124 and set(every.prompt_classes) == set(range(124))
    subset = tmp_path / "few.yaml"
    subset.write_text("classes: [wall, sky]\n")
    few = SAM3VideoSource(str(tiny_sam3), str(subset))
    assert few.prompts == ["wall", "sky"] or sorted(few.prompts) == ["sky", "wall"]
    assert few.config()["prompts"] == few.prompts
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [wal]\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*'wal'"):
        SAM3VideoSource(str(tiny_sam3), str(bad))


def test_local_cv_utils() -> None:
    """The stand-ins for the hub kernel: greedy NMS on an IoU matrix, 8-connected component areas."""
    ious = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.05], [0.0, 0.05, 1.0]])
    scores = torch.tensor([0.2, 0.9, 0.5])
    assert LocalCvUtils.generic_nms(ious, scores, 0.1).tolist() == [1, 2]  # 0 overlaps the best one
    assert LocalCvUtils.generic_nms(ious, scores, 0.6).tolist() == [1, 2, 0]
    mask = torch.zeros(1, 1, 5, 6, dtype=torch.uint8)
    mask[0, 0, 0, 0] = mask[0, 0, 1, 1] = 1  # diagonal neighbours: one component
    mask[0, 0, 3:5, 3:6] = 1
    labels, counts = LocalCvUtils.cc_2d(mask)
    assert counts[0, 0, 0, 0] == 2 and counts[0, 0, 1, 1] == 2 and counts[0, 0, 4, 5] == 6
    assert counts[0, 0, 0, 3] == 0 and labels[0, 0, 0, 0] == labels[0, 0, 1, 1] != labels[0, 0, 3, 3]


# ---------------------------------------------------------------------------------------- the source


def _transformers_loop(folder: Path, frames: torch.Tensor) -> tuple[torch.Tensor, dict[int, tuple[float, int]]]:
    """transformers' documented streaming use, frame by frame (one session, nothing pruned, text
    embeddings computed by the session), painted by the source's documented rules."""
    model, processor = load_sam3(folder)
    model.score_threshold_detection = LOOSE["score_threshold"]
    model.new_det_thresh = LOOSE["new_object_threshold"]
    model.max_num_objects = LOOSE["max_objects"]
    session = processor.init_video_session(inference_device="cpu")
    processor.add_text_prompt(session, PROMPTS)
    masklet_of: dict[int, int] = {}
    rows: dict[int, tuple[float, int]] = {}
    maps = []
    for t in range(T):
        inputs = processor(images=frames[t].permute(2, 0, 1), return_tensors="pt")
        out = model(inference_session=session, frame=inputs.pixel_values[0])
        assert not out.suppressed_obj_ids  # streaming: no hotstart
        obj_ids = sorted(out.obj_id_to_mask)
        scores = torch.tensor([out.obj_id_to_score[obj] for obj in obj_ids], dtype=torch.float32)
        for k in sorted(range(len(obj_ids)), key=lambda k: (-float(scores[k]), obj_ids[k])):
            if obj_ids[k] not in masklet_of:
                masklet_of[obj_ids[k]] = len(masklet_of) + 1
                rows[masklet_of[obj_ids[k]]] = (float(scores[k]), CLASSES[session.obj_id_to_prompt_id[obj_ids[k]]])
        logits = torch.cat([out.obj_id_to_mask[obj] for obj in obj_ids]).float()
        masks = F.interpolate(logits[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0] > 0
        ids = torch.tensor([masklet_of[obj] for obj in obj_ids])
        maps.append(aggregate_masks(masks, ids, scores, "score"))
    return torch.stack(maps), rows


def test_maps_and_table(whole: tuple[torch.Tensor, Any, dict[str, float]]) -> None:
    maps, table, _ = whole
    assert maps.dtype == torch.int32 and tuple(maps.shape) == (T, H, W)
    assert all(bool((maps[t] > 0).any()) for t in range(T)), "random weights should still give masklets"
    ids = torch.unique(maps[maps > 0]).tolist()
    assert len(ids) >= 2 and table.id.tolist() == ids
    assert table.area.tolist() == [int((maps == i).sum()) for i in ids]
    assert set(table.label.tolist()) <= set(CLASSES)
    assert ((table.predicted_iou >= 0) & (table.predicted_iou <= 1)).all()


def test_streaming_matches_transformers(
    tiny_sam3: Path, frames: torch.Tensor, whole: tuple[torch.Tensor, Any, dict[str, float]]
) -> None:
    """Cached text embeddings, chunk-wise preprocessing and the pruned session state (the tiny
    tracker reads 4 frames back, the video has 10) change nothing."""
    maps, table, _ = whole
    expected, rows = _transformers_loop(tiny_sam3, frames)
    assert torch.equal(maps, expected)
    for i, score, label in zip(table.id.tolist(), table.predicted_iou.tolist(), table.label.tolist(), strict=True):
        assert (score, label) == pytest.approx(rows[i])


def test_chunking_invariance(tiny_sam3: Path, frames: torch.Tensor, whole: tuple[torch.Tensor, Any, dict]) -> None:
    maps, table, _ = whole
    chunked, chunked_table = _run(_source(tiny_sam3, window=32), frames, chunk=3)
    assert torch.equal(chunked, maps)
    assert chunked_table.to_json() == table.to_json()


def test_windows_and_stitching(tiny_sam3: Path, frames: torch.Tensor, whole: tuple[torch.Tensor, Any, dict]) -> None:
    window, threshold = 4, 0.05
    source = Recorder(str(tiny_sam3), PROMPTS, prompt_classes=CLASSES, window=window, stitch_iou=threshold, **LOOSE)
    maps, table = _run(source, frames, chunk=3)
    assert torch.equal(maps[:window], whole[0][:window])  # the first window is the same session
    stitched = 0
    for t in range(window, T, window):  # window starts: ids continue iff stitching says so
        prev, new = source.frames[t - 1], source.frames[t]
        inter = new["masks"].flatten(1).float() @ prev["masks"].flatten(1).float().T
        union = new["masks"].flatten(1).sum(1)[:, None] + prev["masks"].flatten(1).sum(1)[None, :] - inter
        iou = inter / union.clamp(min=1)  # (new, old)
        same_class = new["classes"][:, None] == prev["classes"][None, :]
        used = set()
        for n, masklet in enumerate(new["ids"]):
            if masklet in prev["ids"]:
                m = prev["ids"].index(masklet)
                assert same_class[n, m] and iou[n, m] >= threshold and iou[n, m] > 0
                used.add(m)
                stitched += 1
        for n, masklet in enumerate(new["ids"]):
            if masklet not in prev["ids"]:
                assert masklet > max(max(f["ids"], default=0) for f in source.frames[:t])  # a fresh id
                candidates = {m for m in range(len(prev["ids"])) if same_class[n, m] and iou[n, m] >= threshold > 0}
                assert candidates <= used  # every old match it had went to another object
    assert stitched > 0, "the test video should stitch some masklet across a window boundary"
    # Without stitching, every window has its own ids.
    unstitched, _ = _run(_source(tiny_sam3, window=window, stitch_iou=2.0), frames)
    windows = [set(torch.unique(unstitched[s : s + window]).tolist()) - {0} for s in range(0, T, window)]
    assert all(not (a & b) for i, a in enumerate(windows) for b in windows[i + 1 :])
    assert torch.equal(unstitched[:window], maps[:window])


def test_config_and_timings(tiny_sam3: Path, whole: tuple[torch.Tensor, Any, dict[str, float]]) -> None:
    source = _source(tiny_sam3, window=4)
    config = source.config()
    assert config["source"] == "sam3_video" and config["prompts"] == PROMPTS and config["prompt_classes"] == CLASSES
    assert config["checkpoint"] == checkpoint_identity(tiny_sam3)
    assert set(config["checkpoint"]["configs"]) >= {"config.json", "processor_config.json", "tokenizer.json"}
    keys = {cache_key(_source(tiny_sam3, window=4, **change).config()) for change in ({}, {"stitch_iou": 0.7})}
    keys.add(cache_key(_source(tiny_sam3, window=8).config()))
    assert len(keys) == 3 and cache_key(config) in keys
    timings = whole[2]
    assert set(timings) == set(STAGES) and all(value > 0 for value in timings.values())


def test_bfloat16(tiny_sam3: Path, frames: torch.Tensor) -> None:
    source = _source(tiny_sam3, dtype="bfloat16")
    source.begin_video("video", H, W)
    maps = source.add_chunk(frames[:3], 0)
    assert maps.dtype == torch.int32 and bool((maps > 0).any())
    assert next(source.model.parameters()).dtype == torch.bfloat16


def test_write_tiny_command_writes_once(tmp_path: Path, capsys) -> None:
    from vssam2.masklets.sam3_tiny import main

    folder = tmp_path / "tiny"
    main(["--write-tiny", str(folder)])
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    main(["--write-tiny", str(folder)])  # complete: kept, so its masklet caches keep their keys
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert "exists" in capsys.readouterr().out
    (folder / "model.safetensors").unlink()  # incomplete: written again
    main(["--write-tiny", str(folder)])
    assert (folder / "model.safetensors").is_file()
