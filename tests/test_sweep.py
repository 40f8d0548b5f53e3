"""Sweeps as Lightning runs (vssam2.sweep + callbacks.SweepWriter through evaluate.py): grids,
masklets computed in the run and cached, resume, table / JSON / plot, the W&B group, 1 vs 2
processes, and the errors of bad sweeps."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import run_command
from wandb_offline import offline_runs

from datamodules import VSPWDataModule
from evaluate import main as evaluate_main
from vssam2 import label_kernels
from vssam2.errors import DataError
from vssam2.masklets.superpixel import SuperpixelSource
from vssam2.metrics import METRIC_NAMES, MetricConfig, VSSMetrics
from vssam2.refine import majority_vote
from vssam2.sweep import expand_grid, with_parameter
from vssam2.sweep.rechunk import Rechunker

REPO = Path(__file__).resolve().parents[1]
MODELS = ("sim_strong", "sim_flicker")
SUPERPIXEL = {
    "class_path": "vssam2.masklets.superpixel.SuperpixelSource",
    "init_args": {"n_segments": 80, "temporal": True},
}
ORACLE = {"label": "oracle", "class_path": "vssam2.masklets.oracle.OracleSource", "init_args": {"connectivity": 8}}


def sweep_config(root: Path, out: Path, cache: Path, grid: dict[str, Any], **model: Any) -> dict[str, Any]:
    """A sweep config on the synthetic data: 2 val videos, 2 models, 8-frame votes."""
    return {
        "seed_everything": 0,
        "run": {"name": "sweep", "wandb": "offline"},
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(out),
            "use_distributed_sampler": False,
            "enable_model_summary": False,
            "enable_progress_bar": False,
        },
        "model": {
            "class_path": "vssam2.sweep.MaskletSweep",
            "init_args": {"grid": grid, "cache_root": str(cache), **model},
        },
        "data": {
            "class_path": "datamodules.VSPWDataModule",
            "init_args": {
                "root": str(root / "vspw"),
                "pred_roots": {m: str(root / "predictions" / "vspw" / m) for m in MODELS},
                "test_split": "val",
                "clip_len": 8,
                "max_videos": 2,
            },
        },
    }


def run_sweep(config: dict[str, Any], path: Path, *extra: str) -> dict[str, Any]:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    evaluate_main(["test", "--config", str(path), *extra])
    out = Path(config["trainer"]["default_root_dir"]) / config["run"]["name"]
    version = sorted(out.glob("version_*"))[-1]
    return json.loads((version / "sweep.json").read_text()) | {"_dir": str(version)}


def cache_files(cache: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(cache.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def grid_run(synthetic_root, tmp_path_factory):
    """A 2 × 2 grid (superpixel n_segments × refinement.min_share) computed in the run, then run
    again on the same cache (everything read, nothing rewritten)."""
    tmp = tmp_path_factory.mktemp("sweep")
    grid = {"n_segments": [40, 120], "refinement.min_share": [0.0, 0.6]}
    config = sweep_config(synthetic_root, tmp / "runs", tmp / "cache", grid, source=SUPERPIXEL)
    first = run_sweep(config, tmp / "grid.yaml")
    files = cache_files(tmp / "cache")
    config["run"]["wandb"] = "disabled"
    second = run_sweep(config, tmp / "grid.yaml")
    return {"tmp": tmp, "first": first, "second": second, "files": files, "files_after": cache_files(tmp / "cache")}


def test_grid_points_rows_and_caches(grid_run):
    first = grid_run["first"]
    assert first["parameters"] == ["n_segments", "refinement.min_share"]
    labels = [p["label"] for p in first["points"]]
    assert labels == [
        "n_segments=40, refinement.min_share=0",
        "n_segments=40, refinement.min_share=0.6",
        "n_segments=120, refinement.min_share=0",
        "n_segments=120, refinement.min_share=0.6",
    ]
    assert [(r["label"], r["model"]) for r in first["rows"][:2]] == [("base", m) for m in MODELS]
    assert len(first["rows"]) == 2 + 4 * 2
    # points differing only in the rule share one masklet cache folder
    keys = [p["masklet_key"] for p in first["points"]]
    assert keys[0] == keys[1] != keys[2] == keys[3]
    assert all(p["videos_computed"] == 2 and p["videos_read"] == 0 for p in first["points"])
    assert all(p["clip_len"] == 8 for p in first["points"])
    assert len(list((grid_run["tmp"] / "cache").glob("*/*/.done"))) == 4  # 2 configurations × 2 videos
    for row in first["rows"][2:]:
        for name in METRIC_NAMES:
            assert math.isclose(row["delta"][name], row[name] - first["rows"][MODELS.index(row["model"])][name])


def test_second_run_reads_the_cache_and_gives_the_same_table(grid_run):
    second = grid_run["second"]
    assert all(p["videos_computed"] == 0 and p["videos_read"] == 2 for p in second["points"])
    assert grid_run["files_after"] == grid_run["files"]  # nothing rewritten
    assert second["rows"] == grid_run["first"]["rows"]


def test_refined_numbers_equal_a_direct_vote_and_metrics_loop(grid_run, synthetic_root):
    first = grid_run["first"]
    point = first["points"][3]  # n_segments 120, min_share 0.6
    row = next(r for r in first["rows"] if r["label"] == point["label"] and r["model"] == "sim_flicker")
    dm = VSPWDataModule(
        root=str(synthetic_root / "vspw"),
        pred_roots={m: str(synthetic_root / "predictions" / "vspw" / m) for m in MODELS},
        clip_len=8,
        load_frames=False,
        max_videos=2,
        masklet_cache=point["cache_dir"],
    )
    metrics = VSSMetrics(MetricConfig(num_classes=dm.num_classes))
    for chunk in dm.eval_dataset("val", rank=0, world_size=1):
        refined = majority_vote(
            chunk["segments"], chunk["preds"]["sim_flicker"], num_classes=dm.num_classes, min_share=0.6
        )
        metrics.update(refined, chunk["gt"], video=chunk["video"], start=chunk["start"], last=chunk["last"])
    direct = metrics.compute()
    for name in METRIC_NAMES:
        assert math.isclose(row[name], float(direct[name]), rel_tol=1e-9, abs_tol=1e-12), name


def test_outputs_and_the_wandb_group(grid_run):
    folder = Path(grid_run["first"]["_dir"])
    table = (folder / "sweep.md").read_text()
    assert "| n_segments | refinement.min_share | Model | mIoU | WIoU | mBIoU | mVC8 | mVC16 |" in table
    assert "| base | base | sim_strong |" in table and "| 120 | 0.6 | sim_flicker |" in table
    assert (folder / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = offline_runs(folder.parent / "wandb")
    group = "sweep/version_0"
    points = [r for r in runs if r.job_type == "sweep-point"]
    tables = [r for r in runs if r.job_type == "sweep-table"]
    assert len(points) == 4 and len(tables) == 1
    assert all(r.group == group for r in points + tables)
    rows = grid_run["first"]["rows"]
    by_name = {run.name: run for run in points}
    assert sorted(by_name) == sorted(f"{group}/{p['label']}" for p in grid_run["first"]["points"])
    for point in grid_run["first"]["points"]:
        run = by_name[f"{group}/{point['label']}"]
        config = {k: v.get("value", v) if isinstance(v, dict) else v for k, v in run.config.items()}
        assert config["values"] == point["values"]
        assert config["refinement"] == {"rule": "majority_vote", "min_area": 0, "min_share": point["min_share"]}
        assert config["source"]["name"] == "superpixel" and config["source"]["config"]["n_segments"] in (40, 120)
        assert config["base_models"] == list(MODELS) and config["clip_len"] == 8
        assert config["metric_config"]["num_classes"] == 124
        for row in rows:
            if row["label"] == point["label"]:
                model = row["model"]
                assert math.isclose(run.summary[f"{model}/refined/mIoU"], 100 * row["mIoU"])
                assert math.isclose(run.summary[f"{model}/delta/mVC8"], 100 * row["delta"]["mVC8"])
    logged = tables[0].summary  # the last value of every logged key
    assert logged["sweep/table"]["_type"] == "table-file" and logged["sweep/plot"]["_type"] == "image-file"
    data = json.loads((tables[0].folder / "files" / logged["sweep/table"]["path"]).read_text())
    assert data["columns"][:3] == ["n_segments", "refinement.min_share", "model"]
    assert len(data["data"]) == len(rows)
    assert data["data"][-1][:3] == ["120", "0.6", "sim_flicker"]
    assert math.isclose(data["data"][-1][3], 100 * rows[-1]["mIoU"])


def test_a_killed_run_resumes_at_the_unfinished_video(grid_run, tmp_path):
    """A video whose .done is missing (the run died while writing it) is recomputed by its owner;
    every finished video is read."""
    cache = tmp_path / "cache"
    shutil.copytree(grid_run["tmp"] / "cache", cache)
    folder = next(p for p in sorted(cache.glob("superpixel-*")) if p.is_dir())
    video = sorted(d for d in folder.iterdir() if d.is_dir())[-1]
    (video / ".done").unlink()
    next(video.glob("*.png")).unlink()  # a half-written video
    grid = {"n_segments": [40, 120], "refinement.min_share": [0.0, 0.6]}
    config = sweep_config(grid_run["tmp"].parent, tmp_path / "runs", cache, grid, source=SUPERPIXEL)
    config["data"]["init_args"] = grid_run_data(grid_run)
    config["run"]["wandb"] = "disabled"
    resumed = run_sweep(config, tmp_path / "resume.yaml")
    counts = {(p["cache_dir"], p["videos_computed"], p["videos_read"]) for p in resumed["points"]}
    assert (str(folder), 1, 1) in counts
    assert resumed["rows"] == grid_run["first"]["rows"]


def grid_run_data(grid_run) -> dict[str, Any]:
    config = yaml.safe_load((grid_run["tmp"] / "grid.yaml").read_text())
    return config["data"]["init_args"]


def test_ddp_two_processes_give_the_table_of_one(synthetic_root, tmp_path):
    """Two DDP processes (each computing the masklets of its own videos) with the compiled kernels
    switched off (VSSAM2_NO_KERNELS=1, as on a machine without a C compiler) and one process with
    them give the same rows, bit for bit, and the same cache files."""
    grid = {"source": [ORACLE, {"label": "superpixel", **SUPERPIXEL}], "refinement.min_share": [0.0, 0.5]}
    tables = {}
    for devices in (1, 2):
        config = sweep_config(synthetic_root, tmp_path / f"runs{devices}", tmp_path / f"cache{devices}", grid)
        config["data"]["init_args"]["max_videos"] = 3
        config["run"]["wandb"] = "disabled"
        path = tmp_path / f"ddp{devices}.yaml"
        if devices == 1:
            tables[devices] = run_sweep(config, path)
        else:
            config["trainer"] |= {"devices": 2, "strategy": "ddp"}
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            env = {**os.environ, "VSSAM2_NO_KERNELS": "1"}
            run_command(str(REPO / "evaluate.py"), "test", "--config", str(path), env=env)
            tables[devices] = json.loads((tmp_path / "runs2" / "sweep" / "version_0" / "sweep.json").read_text())
    one, two = tables[1], tables[2]
    assert one["rows"] == two["rows"] and one["videos"] == two["videos"] == 3
    assert [p["videos_computed"] for p in two["points"]] == [3, 3, 3, 3]
    assert two["cost"]["world_size"] == 2
    assert one["compiled_kernels"] == label_kernels.AVAILABLE and two["compiled_kernels"] is False
    names = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))  # noqa: E731
    assert names(tmp_path / "cache1") == names(tmp_path / "cache2")


# ---------------------------------------------------------------------------- bad sweeps


def test_bad_sweeps_fail_clearly_before_any_work(synthetic_root, tmp_path):
    def fails(grid, match, error=ValueError, **model):
        config = sweep_config(synthetic_root, tmp_path / "runs", tmp_path / "cache", grid, **model)
        config["run"]["wandb"] = "disabled"
        with pytest.raises(error, match=match):
            run_sweep(config, tmp_path / "bad.yaml")

    not_for_superpixels = r"'window' does not apply to the source SuperpixelSource"
    fails({"window": [4, 8]}, not_for_superpixels, AttributeError, source=SUPERPIXEL)
    fails({"refinement.ratio": [0.5]}, r"refinement has no field 'ratio'", source=SUPERPIXEL)
    fails({"refinement.rule": ["vote"]}, r"'refinement.rule'.*config.*RefinementRule", source=SUPERPIXEL)
    vote = {"class_path": "vssam2.fusion.MajorityVote"}
    fails({"refinement.rule": [vote, vote]}, "same masklet configuration and refinement", source=SUPERPIXEL)
    fails({"refinement.rule": [vote], "refinement.min_share": [0.5]}, "together", source=SUPERPIXEL)
    fails({"n_segments": [50, 50]}, "same masklet configuration", source=SUPERPIXEL)
    fails({"n_segments": []}, "non-empty list", source=SUPERPIXEL)
    fails({"n_segments": [50]}, "needs a masklet source")
    fails({"n_segments": [50]}, "not prediction sources", source=SUPERPIXEL, methods=["nope"])
    assert not list(tmp_path.glob("cache/*/*/.done"))


def test_masklet_cache_of_the_data_module_is_refused(grid_run, synthetic_root, tmp_path):
    grid = {"n_segments": [50]}
    config = sweep_config(synthetic_root, tmp_path / "runs", tmp_path / "cache", grid, source=SUPERPIXEL)
    config["data"]["init_args"]["masklet_cache"] = grid_run["first"]["points"][0]["cache_dir"]
    config["run"]["wandb"] = "disabled"
    with pytest.raises(ValueError, match="leave data.masklet_cache unset"):
        run_sweep(config, tmp_path / "bad.yaml")


def test_cache_folders_of_another_configuration_and_broken_videos_are_named(grid_run, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(grid_run["tmp"] / "cache", cache)
    folders = sorted(p for p in cache.glob("superpixel-*") if p.is_dir())
    config_path = folders[0] / "config.json"
    record = json.loads(config_path.read_text())
    data = grid_run_data(grid_run)
    grid = {"n_segments": [40, 120]}

    def sweep() -> None:
        config = sweep_config(Path(data["root"]).parent, tmp_path / "runs", cache, grid, source=SUPERPIXEL)
        config["data"]["init_args"] = data
        config["run"]["wandb"] = "disabled"
        run_sweep(config, tmp_path / "cfg.yaml")

    record["source"]["config"]["n_segments"] = 999  # written by another configuration
    config_path.write_text(json.dumps(record))
    with pytest.raises(DataError, match=str(folders[0].name)):
        sweep()
    shutil.rmtree(cache)
    shutil.copytree(grid_run["tmp"] / "cache", cache)
    video = sorted(d for d in folders[1].iterdir() if d.is_dir())[0]
    missing = sorted(video.glob("*.png"))[2]
    missing.unlink()  # .done says complete, a frame is gone
    with pytest.raises(DataError, match=missing.name):
        sweep()


# ---------------------------------------------------------------------------- parts


def test_rechunker_gives_the_chunks_of_a_stream_with_that_clip_len():
    rng = np.random.default_rng(0)
    frames = 23
    gt = torch.from_numpy(rng.integers(0, 5, (frames, 4, 6), dtype=np.uint8))
    seg = torch.from_numpy(rng.integers(0, 9, (frames, 4, 6)).astype(np.int32))
    pred = torch.from_numpy(rng.integers(0, 5, (frames, 4, 6), dtype=np.uint8))
    for clip_len in (1, 4, 7, 23, 40):
        rechunker = Rechunker(clip_len)
        out = []
        start = 0
        for size in (3, 9, 1, 10):
            stop = start + size
            chunk = {
                "video": "v",
                "start": start,
                "last": stop == frames,
                "frame_ids": [f"{i:05d}" for i in range(start, stop)],
                "gt": gt[start:stop],
                "segments": seg[start:stop],
                "preds": {"m": pred[start:stop]},
            }
            out.extend(rechunker.push(chunk))
            start = stop
        bounds = [(s, min(s + clip_len, frames)) for s in range(0, frames, clip_len)]
        assert [(c["start"], c["start"] + len(c["frame_ids"])) for c in out] == bounds
        assert [c["last"] for c in out] == [b == bounds[-1] for b in bounds]
        for chunk, (a, b) in zip(out, bounds):
            assert torch.equal(chunk["gt"], gt[a:b]) and torch.equal(chunk["segments"], seg[a:b])
            assert torch.equal(chunk["preds"]["m"], pred[a:b])
            assert chunk["frame_ids"] == [f"{i:05d}" for i in range(a, b)]


def test_rechunker_refuses_a_chunk_out_of_order():
    rechunker = Rechunker(4)
    chunk = {"video": "v", "start": 0, "last": False, "frame_ids": ["0"], "gt": torch.zeros(1, 2, 2), "preds": {}}
    list(rechunker.push(chunk))
    with pytest.raises(ValueError, match="does not follow"):
        list(rechunker.push({**chunk, "start": 3}))


def test_expand_grid_and_with_parameter():
    source = SuperpixelSource(n_segments=80)
    points = expand_grid({"n_segments": [40, 120], "refinement.min_area": [0, 10]}, source, 16, "VSPW", 124)
    assert [(p.values["n_segments"], p.min_area) for p in points] == [(40, 0), (40, 10), (120, 0), (120, 10)]
    assert source.n_segments == 80  # the given source is not modified
    assert [p.source.n_segments for p in points] == [40, 40, 120, 120]
    with pytest.raises(TypeError, match="is an int"):
        with_parameter(source, "n_segments", "many")
    with pytest.raises(AttributeError, match="public attributes"):
        with_parameter(source, "_prev", 1)
    from vssam2.masklets.proposals import ProposalParams
    from vssam2.masklets.sam2_video import SAM2VideoSource

    sam2 = SAM2VideoSource("vssam2-tiny-test", proposal=ProposalParams(points_per_side=8))
    clone = with_parameter(sam2, "proposal.points_per_side", 16)
    assert clone.proposal.points_per_side == 16 and sam2.proposal.points_per_side == 8
    with pytest.raises(ValueError, match="window must be"):
        with_parameter(sam2, "window", 0)
    points = expand_grid({"window": [4, 8]}, sam2, 16, "VSPW", 124)
    assert [p.clip_len for p in points] == [4, 8]  # one vote per window


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# slow: two more Lightning processes (~40 s each); the 2-process DDP equality above is in the default suite
@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["slurm", "torchrun"])
def test_slurm_and_torchrun_launches_give_the_table_of_one_process(launcher, synthetic_root, tmp_path):
    """The same command started as srun starts it in a 2-task allocation (Lightning's
    SLURMEnvironment takes the ranks from SLURM_PROCID / SLURM_LOCALID and spawns nothing), or
    by torchrun (TorchElasticEnvironment): the table equals one process's."""
    import subprocess
    import sys

    grid = {"source": [ORACLE, {"label": "superpixel", **SUPERPIXEL}], "refinement.min_share": [0.0, 0.5]}
    config = sweep_config(synthetic_root, tmp_path / "runs1", tmp_path / "cache1", grid)
    config["run"]["wandb"] = "disabled"
    one = run_sweep(config, tmp_path / "one.yaml")
    config = sweep_config(synthetic_root, tmp_path / "multi", tmp_path / "cache", grid)
    config["run"]["wandb"] = "disabled"
    config["trainer"] |= {"devices": 2, "num_nodes": 1, "strategy": "ddp"}
    path = tmp_path / "multi.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    command = [str(REPO / "evaluate.py"), "test", "--config", str(path)]
    if launcher == "torchrun":
        args = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), *command]
        run_command(*args, env={**os.environ})
    else:
        procs = []
        for rank in range(2):
            env = {
                **os.environ,
                "SLURM_NTASKS": "2",
                "SLURM_NTASKS_PER_NODE": "2",
                "SLURM_NNODES": "1",
                "SLURM_NODEID": "0",
                "SLURM_PROCID": str(rank),
                "SLURM_LOCALID": str(rank),
                "SLURM_JOB_ID": "4242",
                "SLURM_JOB_NAME": "sweep",
                "SLURM_NODELIST": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, *command],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
        assert all(proc.returncode == 0 for proc in procs), "\n".join(out[-3000:] for out in outputs)
    two = json.loads((tmp_path / "multi" / "sweep" / "version_0" / "sweep.json").read_text())
    assert two["cost"]["world_size"] == 2
    assert two["rows"] == one["rows"]
