"""The masklet cache: keys, round trip, resume, atomicity, sharding, the data-module option, the CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from datamodules import VIPSegDataModule, VSPWDataModule
from vssam2.datasets import balance_videos
from vssam2.errors import DataError
from vssam2.masklets.base import MaskletSource, MaskletTable
from vssam2.masklets.cache import (
    CONFIG_FILE,
    DONE_FILE,
    MAX_SEGMENT_ID,
    MaskletCache,
    cache_config,
    cache_key,
    open_cache,
)
from vssam2.masklets.compute import compute_cache
from vssam2.synthetic import SyntheticConfig, write_vspw

REPO = Path(__file__).resolve().parents[1]
CLIP_LEN = 7  # 18–20 frames → three chunks per video, the last one short


class GridSource(MaskletSource):
    """Square cells as masklets; ids shift with the frame so maps differ over time.

    ``fail_on`` (not part of the config: it does not change the output) makes the source raise
    in the second chunk of that video, after the first chunk was written. ``offset`` pushes ids
    up (16-bit limit tests). ``begun`` records every video started, over all instances.
    """

    name = "grid"
    begun: list[str] = []

    def __init__(self, cell: int = 8, offset: int = 0, fail_on: str | None = None) -> None:
        super().__init__()
        self.cell = cell
        self.offset = offset
        self.fail_on = fail_on

    def config(self) -> dict[str, Any]:
        return {"cell": self.cell, "offset": self.offset}

    def _begin(self) -> None:
        GridSource.begun.append(self._video)

    def _segment(self, frames: torch.Tensor, start: int, gt: torch.Tensor | None) -> torch.Tensor:
        if self.fail_on == self._video and start > 0:
            raise RuntimeError(f"simulated crash in {self._video}")
        num_frames, height, width = frames.shape[:3]
        ys = torch.arange(height) // self.cell
        xs = torch.arange(width) // self.cell
        cells = ys[:, None] * (width // self.cell + 1) + xs[None, :] + 1  # (H, W)
        t = torch.arange(start, start + num_frames)[:, None, None]
        return (cells[None] + (t % 3) + self.offset).to(torch.int32)


def expected_maps(source: MaskletSource, dm: VSPWDataModule, split: str) -> dict[str, tuple[np.ndarray, MaskletTable]]:
    """What the source gives on the split when run directly (no cache)."""
    maps: dict[str, list[np.ndarray]] = {}
    tables: dict[str, MaskletTable] = {}
    for chunk in dm.eval_dataset(split, 0, 1):
        if chunk["start"] == 0:
            source.begin_video(chunk["video"], *chunk["gt"].shape[1:])
            maps[chunk["video"]] = []
        maps[chunk["video"]].append(source.add_chunk(chunk["frames"], chunk["start"], chunk["gt"]).numpy())
        if chunk["last"]:
            tables[chunk["video"]] = source.end_video()
    return {video: (np.concatenate(maps[video]), tables[video]) for video in maps}


def assert_tables_equal(a: MaskletTable, b: MaskletTable) -> None:
    assert a.to_json() == b.to_json()


def stray_files(folder: Path) -> list[Path]:
    """Temporary files an interrupted write could leave."""
    return [path for path in folder.rglob("*") if ".tmp-" in path.name]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("masklet_cache_data") / "vspw"
    write_vspw(
        root,
        SyntheticConfig(height=48, width=64, min_frames=18, max_frames=20, videos={"train": 1, "val": 2, "test": 1}),
    )
    return root


@pytest.fixture
def dm(data_root: Path) -> VSPWDataModule:
    return VSPWDataModule(root=str(data_root), clip_len=CLIP_LEN)


@pytest.fixture(autouse=True)
def _reset_calls():
    GridSource.begun = []
    yield


# ---------------------------------------------------------------------------------- the key


def test_key_is_stable_canonical_and_sensitive():
    source = GridSource(cell=8)
    config = cache_config(source, "VSPW", 16, 124)
    key = cache_key(config)
    assert len(key) == 12 and all(c in "0123456789abcdef" for c in key)
    assert key == cache_key(json.loads(json.dumps(config)))  # survives a JSON round trip
    assert cache_key({"a": (1, 2), "b": np.float64(0.5)}) == cache_key({"b": 0.5, "a": [1, 2]})
    others = [
        cache_config(GridSource(cell=4), "VSPW", 16, 124),  # a source parameter
        cache_config(source, "VIPSeg", 16, 124),  # the layout
        cache_config(source, "VSPW", 32, 124),  # the chunking
        cache_config(source, "VSPW", 16, 124, extra={"resize": [240, 427]}),
    ]
    assert len({key, *(cache_key(other) for other in others)}) == 5
    # fail_on is not in config(): it does not change the key.
    assert cache_key(cache_config(GridSource(cell=8, fail_on="x"), "VSPW", 16, 124)) == key


# ------------------------------------------------------------------------------ round trip


def test_round_trip_maps_and_tables(dm, tmp_path):
    summary = compute_cache(GridSource(cell=8), dm, "val", cache_root=tmp_path, progress=False)
    videos = [video.name for video in dm.index("val").videos]
    assert summary.computed == videos and summary.skipped == [] and len(videos) == 2
    assert summary.frames == dm.index("val").num_frames
    key = cache_key(cache_config(GridSource(cell=8), "VSPW", CLIP_LEN, 124))
    assert summary.directory == tmp_path / f"grid-{key}"
    stored = json.loads((summary.directory / CONFIG_FILE).read_text())
    assert stored["key"] == key and stored["source"] == {"name": "grid", "config": {"cell": 8, "offset": 0}}

    cache = open_cache(summary.directory, key)
    assert cache.videos() == sorted(videos)
    expected = expected_maps(GridSource(cell=8), dm, "val")
    for video, (maps, table) in expected.items():
        got, got_table = cache.read_video(video)
        assert got.dtype == torch.int32
        np.testing.assert_array_equal(got.numpy(), maps)
        assert_tables_equal(got_table, table)
        entry = next(entry for entry in dm.index("val").videos if entry.name == video)
        assert sorted(path.stem for path in cache.video_dir(video).glob("*.png")) == sorted(entry.frame_ids)
        with Image.open(cache.frame_path(video, entry.frame_ids[0])) as image:
            assert image.mode == "I;16"
    assert stray_files(summary.directory) == []


def test_ids_up_to_65535_round_trip_and_larger_ones_raise(dm, tmp_path):
    # cells reach ~ 6*9+1+2 = 57 → the largest id is just under the limit.
    summary = compute_cache(
        GridSource(cell=8, offset=MAX_SEGMENT_ID - 60), dm, "val", cache_root=tmp_path, progress=False
    )
    cache = open_cache(summary.directory)
    maps, table = cache.read_video(summary.computed[0])
    assert 65000 < int(maps.max()) <= MAX_SEGMENT_ID and int(table.id.max()) == int(maps.max())
    with pytest.raises(ValueError, match="16-bit"):
        compute_cache(GridSource(cell=8, offset=MAX_SEGMENT_ID), dm, "val", cache_root=tmp_path, progress=False)
    bad = MaskletCache.directory_for(
        tmp_path, "grid", cache_key(cache_config(GridSource(offset=MAX_SEGMENT_ID), "VSPW", CLIP_LEN, 124))
    )
    assert not any(bad.rglob(DONE_FILE)) and stray_files(bad) == []


# ------------------------------------------------------------------------ resume, atomicity


def test_resume_after_crash_recomputes_only_the_unfinished_video(dm, tmp_path):
    first, second = [video.name for video in dm.index("val").videos]
    with pytest.raises(RuntimeError, match="simulated crash"):
        compute_cache(GridSource(cell=8, fail_on=second), dm, "val", cache_root=tmp_path, progress=False)
    cache = open_cache(next(tmp_path.iterdir()))
    assert cache.is_done(first) and not cache.is_done(second)
    # The crashed video has its first chunk's frames but no table and no marker; nothing half-written.
    partial = cache.video_dir(second)
    assert len(list(partial.glob("*.png"))) == CLIP_LEN
    assert not (partial / "masklets.json").exists() and not (partial / DONE_FILE).exists()
    assert stray_files(cache.directory) == []
    with pytest.raises(DataError, match="incomplete") as error:
        cache.read_segments(second, ["00000000"])
    assert error.value.path == partial / DONE_FILE
    (partial / "junk.png").write_bytes(b"left over")  # cleared when the video is recomputed

    GridSource.begun = []
    summary = compute_cache(GridSource(cell=8), dm, "val", cache_root=tmp_path, progress=False)
    assert GridSource.begun == [second]
    assert summary.computed == [second] and summary.skipped == [first]
    assert not (partial / "junk.png").exists()
    expected = expected_maps(GridSource(cell=8), dm, "val")
    for video, (maps, table) in expected.items():
        got, got_table = open_cache(cache.directory).read_video(video)
        np.testing.assert_array_equal(got.numpy(), maps)
        assert_tables_equal(got_table, table)

    # A third run has nothing left to do.
    GridSource.begun = []
    summary = compute_cache(GridSource(cell=8), dm, "val", cache_root=tmp_path, progress=False)
    assert GridSource.begun == [] and summary.computed == [] and summary.skipped == [first, second]


# -------------------------------------------------------------------------------- staleness


def test_changed_parameter_never_reads_the_old_cache(dm, tmp_path):
    old = compute_cache(GridSource(cell=8), dm, "val", cache_root=tmp_path, max_videos=1, progress=False)
    new_key = cache_key(cache_config(GridSource(cell=4), "VSPW", CLIP_LEN, 124))
    with pytest.raises(DataError, match="stale") as error:
        open_cache(old.directory, new_key)
    assert str(old.directory) in str(error.value)
    GridSource.begun = []
    new = compute_cache(GridSource(cell=4), dm, "val", cache_root=tmp_path, max_videos=1, progress=False)
    assert new.directory != old.directory and GridSource.begun == new.computed == old.computed
    assert open_cache(new.directory, new_key).key == new_key

    # An edited config.json no longer hashes to the folder's key.
    config_path = old.directory / CONFIG_FILE
    stored = json.loads(config_path.read_text())
    stored["source"]["config"]["cell"] = 16
    config_path.write_text(json.dumps(stored))
    with pytest.raises(DataError, match="stale"):
        open_cache(old.directory)
    with pytest.raises(DataError, match="stale"):
        compute_cache(GridSource(cell=8), dm, "val", cache_root=tmp_path, max_videos=1, progress=False)
    config_path.unlink()
    with pytest.raises(DataError, match="config.json is missing"):
        open_cache(old.directory)

    # A video folder written under another key (e.g. copied in) is stale, and recomputed.
    cache = open_cache(new.directory)
    video = new.computed[0]
    done = cache.done_path(video)
    done.write_text(json.dumps({**json.loads(done.read_text()), "key": "0123456789ab"}))
    with pytest.raises(DataError, match="stale"):
        open_cache(new.directory).read_table(video)
    GridSource.begun = []
    compute_cache(GridSource(cell=4), dm, "val", cache_root=tmp_path, max_videos=1, progress=False)
    assert GridSource.begun == [video] and open_cache(new.directory).is_done(video)


# --------------------------------------------------------------------------------- sharding


def test_sharding_two_ranks_disjoint_and_complete(dm, tmp_path, monkeypatch):
    videos = dm.index("val").videos
    shards = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        shards.append(compute_cache(GridSource(cell=8), dm, "val", cache_root=tmp_path, progress=False))
    assert shards[0].directory == shards[1].directory
    assert (shards[0].rank, shards[1].rank, shards[0].world_size) == (0, 1, 2)
    assert set(shards[0].computed).isdisjoint(shards[1].computed)
    assert sorted(shards[0].computed + shards[1].computed) == sorted(video.name for video in videos)
    bins = balance_videos([video.num_frames for video in videos], 2)
    for rank in range(2):
        assert shards[rank].computed == [videos[i].name for i in bins[rank]]
    assert GridSource.begun == shards[0].computed + shards[1].computed
    # Explicit arguments win over the environment.
    again = compute_cache(GridSource(cell=8), dm, "val", cache_root=tmp_path, rank=0, world_size=1, progress=False)
    assert again.computed == [] and sorted(again.skipped) == sorted(video.name for video in videos)


# ------------------------------------------------------------------------- data-module option


def test_datamodule_adds_cached_segments(dm, data_root, tmp_path):
    summary = compute_cache(GridSource(cell=8), dm, "val", cache_root=tmp_path, progress=False)
    expected = expected_maps(GridSource(cell=8), dm, "val")
    with_cache = VSPWDataModule(root=str(data_root), clip_len=5, masklet_cache=str(summary.directory))
    stream = with_cache.eval_dataset("val", 0, 1)
    pickle.loads(pickle.dumps(stream))  # workers get a copy
    seen = {video: 0 for video in expected}
    for chunk in with_cache.eval_dataloader("val", 0, 1):
        segments = chunk["segments"]
        assert segments.dtype == torch.int32 and segments.shape == chunk["gt"].shape
        start = chunk["start"]
        np.testing.assert_array_equal(segments.numpy(), expected[chunk["video"]][0][start : start + len(segments)])
        seen[chunk["video"]] += len(segments)
    assert seen == {video: len(maps) for video, (maps, _) in expected.items()}
    assert "segments" not in next(iter(dm.eval_dataset("val", 0, 1)))  # off by default


def test_datamodule_cache_errors_name_the_file(dm, data_root, tmp_path):
    summary = compute_cache(GridSource(cell=8), dm, "val", cache_root=tmp_path, progress=False)
    cache = open_cache(summary.directory)
    first, second = [video for video in dm.index("val").videos]

    # A missing frame map: raised when the chunk is read, naming the file.
    missing = cache.frame_path(first.name, first.frame_ids[3])
    missing.unlink()
    module = VSPWDataModule(root=str(data_root), clip_len=CLIP_LEN, masklet_cache=str(summary.directory))
    with pytest.raises(DataError, match="is missing") as error:
        list(module.eval_dataset("val", 0, 1))
    assert error.value.path == missing and str(missing) in str(error.value)

    # A map of the wrong size.
    Image.fromarray(np.ones((10, 12), np.uint16)).save(missing)
    with pytest.raises(DataError, match="size mismatch") as error:
        list(module.eval_dataset("val", 0, 1))
    assert error.value.path == missing

    # A video not (completely) in the cache: raised when the stream is built.
    done = cache.done_path(second.name)
    done.unlink()
    module = VSPWDataModule(root=str(data_root), clip_len=CLIP_LEN, masklet_cache=str(summary.directory))
    with pytest.raises(DataError, match="incomplete") as error:
        module.eval_dataset("val", 0, 1)
    assert error.value.path == done and str(done) in str(error.value)

    # A stale folder, a folder that is not a cache, a cache of another dataset layout.
    config_path = summary.directory / CONFIG_FILE
    stored = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**stored, "data": {**stored["data"], "clip_len": 99}}))
    with pytest.raises(DataError, match="stale"):
        VSPWDataModule(root=str(data_root), masklet_cache=str(summary.directory))
    config_path.write_text(json.dumps(stored))
    with pytest.raises(DataError, match="does not exist"):
        VSPWDataModule(root=str(data_root), masklet_cache=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="VSPW data, not VIPSeg"):
        VIPSegDataModule(root=str(data_root), masklet_cache=str(summary.directory))


# ---------------------------------------------------------------------------------- the CLI


def write_cli_config(path: Path, data_root: Path, cache_root: Path, source: dict[str, Any]) -> Path:
    config = {
        "source": source,
        "data": {"class_path": "datamodules.VSPWDataModule", "init_args": {"root": str(data_root), "clip_len": 8}},
        "split": "val",
        "cache_root": str(cache_root),
        "progress": False,
    }
    path.write_text(yaml.safe_dump(config))
    return path


SUPERPIXEL = {
    "class_path": "vssam2.masklets.superpixel.SuperpixelSource",
    "init_args": {"method": "slic", "n_segments": 20, "temporal": True},
}


def test_cli_main_end_to_end(data_root, tmp_path, capsys):
    from vssam2.masklets.__main__ import main
    from vssam2.masklets.superpixel import SuperpixelSource

    config = write_cli_config(tmp_path / "masklets.yaml", data_root, tmp_path / "cache", SUPERPIXEL)
    summary = main(["--config", str(config)])
    out = capsys.readouterr().out
    assert str(summary.directory) in out and "2 videos computed" in out and "frames/s" in out
    assert summary.directory.parent == tmp_path / "cache" and summary.directory.name.startswith("superpixel-")
    source = SuperpixelSource(method="slic", n_segments=20, temporal=True)
    module = VSPWDataModule(root=str(data_root), clip_len=8)
    expected = expected_maps(source, module, "val")
    cache = open_cache(summary.directory, cache_key(cache_config(source, "VSPW", 8, 124)))
    for video, (maps, table) in expected.items():
        got, got_table = cache.read_video(video)
        np.testing.assert_array_equal(got.numpy(), maps)
        assert_tables_equal(got_table, table)
    # Rerun: everything is done; a dotted override of a parameter goes to a new folder.
    assert main(["--config", str(config)]).skipped == list(expected)
    other = main(["--config", str(config), "--source.init_args.n_segments", "10", "--max_videos", "1"])
    assert other.directory != summary.directory and len(other.computed) == 1


def test_cli_under_torchrun_rank_environment(data_root, tmp_path, monkeypatch, capsys):
    """As torchrun starts it (RANK / WORLD_SIZE / LOCAL_RANK set): this rank takes its share."""
    config = write_cli_config(tmp_path / "masklets.yaml", data_root, tmp_path / "cache", SUPERPIXEL)
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    from vssam2.masklets.__main__ import main

    main(["--config", str(config)])
    printed = capsys.readouterr().out
    assert "[rank 1/2]" in printed and "1 videos computed" in printed
    (folder,) = (tmp_path / "cache").iterdir()
    assert len(open_cache(folder).videos()) == 1


def test_shipped_sam2_config_caches_and_resumes(data_root, tmp_path):
    """configs/masklets/sam2_tiny_synthetic.yaml (tiny random SAM2) through the one command."""
    from vssam2.masklets.__main__ import main

    config = Path(__file__).resolve().parents[1] / "configs" / "masklets" / "sam2_tiny_synthetic.yaml"
    args = [
        "--config",
        str(config),
        "--data.init_args.root",
        str(data_root),
        "--cache_root",
        str(tmp_path),
        "--max_videos",
        "1",
        "--progress",
        "false",
    ]
    summary = main(args)
    assert summary.directory.name.startswith("sam2_video-") and len(summary.computed) == 1
    maps, table = open_cache(summary.directory).read_video(summary.computed[0])
    assert maps.dtype == torch.int32 and maps.shape[1:] == (48, 64)
    assert len(table) > 0 and set(np.unique(maps.numpy())) - {0} == set(table.id.tolist())
    assert main(args).skipped == summary.computed
