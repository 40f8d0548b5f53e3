"""evaluate.py end to end: fast_dev_run, a full tiny run checked against the slow references,
W&B offline files, and 2-process DDP giving the same numbers as 1 process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import run_command
from metric_reference import ref_boundary_iou_image, ref_iou, ref_video_consistency
from PIL import Image

from evaluate import main as evaluate_main
from vssam2 import label_kernels
from vssam2.labels import raw_to_eval

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "evaluate" / "synthetic.yaml"
MODELS = ("sim_strong", "sim_boundary", "sim_flicker")


def eval_args(data: Path, out: Path, *extra: str) -> list[str]:
    pred_roots = {m: str(data / "predictions" / "vspw" / m) for m in MODELS}
    return [
        "test",
        "--config",
        str(CONFIG),
        "--data.root",
        str(data / "vspw"),
        "--data.pred_roots",
        json.dumps(pred_roots),
        "--data.clip_len",
        "7",
        "--trainer.default_root_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def load_split(data: Path, split: str = "val") -> dict[str, dict[str, np.ndarray]]:
    """GT and predictions of every video, read independently of datamodules/."""
    videos = {}
    for name in (data / "vspw" / f"{split}.txt").read_text().split():
        mask_dir = data / "vspw" / "data" / name / "mask"
        stems = sorted(p.stem for p in mask_dir.glob("*.png"))
        entry = {"gt": np.stack([raw_to_eval(np.array(Image.open(mask_dir / f"{s}.png"))) for s in stems])}
        for m in MODELS:
            entry[m] = np.stack(
                [np.array(Image.open(data / "predictions" / "vspw" / m / name / f"{s}.png")) for s in stems]
            )
        videos[name] = entry
    return videos


def test_full_run_matches_reference_and_writes_reports(synthetic_root: Path, tmp_path: Path, capsys):
    evaluate_main(eval_args(synthetic_root, tmp_path))
    run_dir = tmp_path / "synthetic_eval" / "version_0"
    results = json.loads((run_dir / "results.json").read_text())
    printed = capsys.readouterr().out
    assert "| Method | mIoU | WIoU | mBIoU | mVC8 | mVC16 |" in printed
    assert (run_dir / "results.md").read_text().count("\n| sim_") == 3
    assert (run_dir / "per_class_iou.png").stat().st_size > 1000
    assert len(list((run_dir / "overlays").glob("*.png"))) == 4  # 2 videos × 2 frames
    assert (run_dir / "metrics.csv").exists()

    videos = load_split(synthetic_root)
    assert results["videos"] == len(videos)
    assert results["frames"] == sum(len(v["gt"]) for v in videos.values())
    gts = [f for v in videos.values() for f in v["gt"]]
    for m in MODELS:
        got = results["methods"][m]
        preds = [f for v in videos.values() for f in v[m]]
        miou, fwiou, _ = ref_iou(preds, gts, 124)
        assert got["mIoU"] == pytest.approx(miou, abs=1e-9)
        assert got["WIoU"] == pytest.approx(fwiou, abs=1e-9)
        assert got["mBIoU"] == pytest.approx(ref_boundary_iou_image(preds, gts, 5), abs=1e-9)
        for n in (8, 16):
            ref = ref_video_consistency([v[m] for v in videos.values()], [v["gt"] for v in videos.values()], n)
            assert got[f"mVC{n}"] == pytest.approx(ref, abs=1e-9)
    # The simulated error profiles rank as designed.
    methods = results["methods"]
    assert methods["sim_strong"]["mIoU"] > methods["sim_boundary"]["mIoU"]
    assert methods["sim_boundary"]["mBIoU"] < methods["sim_flicker"]["mBIoU"]
    assert methods["sim_flicker"]["mVC8"] < methods["sim_boundary"]["mVC8"]


def test_fast_dev_run(synthetic_root: Path, tmp_path: Path):
    cli = evaluate_main(eval_args(synthetic_root, tmp_path, "--trainer.fast_dev_run", "true"))
    assert set(cli.model.report.rows) == set(MODELS)
    assert cli.model.report.frames == 7  # one chunk


def test_wandb_offline_files(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    evaluate_main(eval_args(synthetic_root, tmp_path, "--run.wandb", "offline", "--data.max_videos", "1"))
    runs = list((tmp_path / "synthetic_eval" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    assert list((media / "table").rglob("*.table.json")), "results table not logged"
    images = [p.name for p in (media / "images").rglob("*.png")]
    assert any("per_class_iou" in name for name in images)
    assert any("overlays" in name for name in images)
    assert list(media.rglob("*mask*")) or list((media / "images").rglob("*/*.png")), "segmentation masks not logged"


# slow: two Lightning processes (~32 s); the default run's 2-process sweep test
# (tests/test_sweep.py) covers the same sharding, ChunkScorer syncs and the kernels switched off
@pytest.mark.slow
def test_ddp_two_processes_without_kernels_equal_one_with(synthetic_root: Path, tmp_path: Path):
    """evaluate.py on 2 DDP processes with the compiled kernels switched off (VSSAM2_NO_KERNELS=1,
    as on a machine without a C compiler) gives the numbers of 1 process with them, bit for bit:
    the sharding by whole videos and the numpy / torch fallbacks both change nothing."""

    def run(out: Path, devices: int) -> dict:
        args = eval_args(
            synthetic_root,
            out,
            "--trainer.devices",
            str(devices),
            "--trainer.strategy",
            "ddp" if devices > 1 else "auto",
            "--run.wandb",
            "disabled",
            "--data.load_frames",
            "false",
        )
        if devices > 1:  # DDP needs its own processes; one process runs here, the same code path
            run_command(str(REPO / "evaluate.py"), *args, env={**os.environ, "VSSAM2_NO_KERNELS": "1"})
        else:
            evaluate_main(args)
        return json.loads((out / "synthetic_eval" / "version_0" / "results.json").read_text())

    one = run(tmp_path / "one", 1)
    two = run(tmp_path / "two", 2)
    assert one["compiled_kernels"] == label_kernels.AVAILABLE and two["compiled_kernels"] is False
    assert one["frames"] == two["frames"] and one["videos"] == two["videos"] == 3
    assert one["methods"] == two["methods"]  # bitwise-identical numbers, per-class IoU included


def test_missing_prediction_folder_is_a_clear_error(synthetic_root: Path, tmp_path: Path):
    args = eval_args(synthetic_root, tmp_path)
    args[args.index("--data.pred_roots") + 1] = json.dumps({"ghost": str(tmp_path / "nowhere")})
    with pytest.raises(Exception, match="nowhere"):
        evaluate_main(args)


def test_vipseg_run(synthetic_root: Path, tmp_path: Path):
    config = REPO / "configs" / "evaluate" / "synthetic_vipseg.yaml"
    pred_roots = {m: str(synthetic_root / "predictions" / "vipseg" / m) for m in MODELS}
    cli = evaluate_main(
        [
            "test",
            "--config",
            str(config),
            "--data.root",
            str(synthetic_root / "vipseg"),
            "--data.pred_roots",
            json.dumps(pred_roots),
            "--data.load_frames",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    results = json.loads((tmp_path / "synthetic_vipseg_eval" / "version_0" / "results.json").read_text())
    assert results["videos"] == 3 and set(results["methods"]) == set(MODELS)
    assert cli.model.report.rows["sim_strong"]["mIoU"] > 0.8
