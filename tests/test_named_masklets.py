"""I-SAM3: masklets painted with the class of the prompt that produced them (vssam2.named_masklets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_thread

from datamodules import VSPWDataModule
from evaluate import main as evaluate_main
from vssam2.labels import vspw_classes
from vssam2.masklets.base import MaskletTable
from vssam2.named_masklets import label_map

REPO = Path(__file__).resolve().parents[1]


def vspw_id(name: str) -> int:
    return vspw_classes().names.index(name)


def _table(ids, labels) -> MaskletTable:
    n = len(ids)
    return MaskletTable(
        id=np.asarray(ids, np.int64),
        predicted_iou=np.full(n, 0.9),
        stability=np.full(n, np.nan),
        area=np.ones(n, np.int64),
        first_frame=np.zeros(n, np.int64),
        last_frame=np.zeros(n, np.int64),
        label=np.asarray(labels, np.int64),
    )


def test_each_masklet_takes_its_label_and_uncovered_pixels_are_255() -> None:
    segments = torch.tensor([[[0, 3, 3], [7, 7, 0]], [[3, 0, 12], [12, 12, 7]]], dtype=torch.int32)
    painted = label_map(segments, _table([3, 7, 12, 40], [5, 0, 123, 9]), "t.json", 124)
    want = torch.tensor([[[255, 5, 5], [0, 0, 255]], [[5, 255, 123], [123, 123, 0]]], dtype=torch.uint8)
    assert painted.dtype == torch.uint8 and torch.equal(painted, want)
    # a class-agnostic masklet among named ones paints nothing
    painted = label_map(segments, _table([3, 7, 12], [5, -1, 2]), "t.json", 124)
    assert int(painted[0, 1, 0]) == 255 and int(painted[0, 0, 1]) == 5
    empty = label_map(torch.zeros(1, 2, 2, dtype=torch.int32), _table([], []), "t.json", 124)
    assert bool((empty == 255).all())


def test_bad_tables_are_refused_naming_the_file() -> None:
    segments = torch.tensor([[[1, 2]]], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"cache/v/table.json: masklets \[2\] .* not in the score table"):
        label_map(segments, _table([1], [4]), "cache/v/table.json", 124)
    with pytest.raises(ValueError, match="cache/v/table.json: the masklets carry no class .*sam3_video"):
        label_map(segments, _table([1, 2], [-1, -1]), "cache/v/table.json", 124)
    with pytest.raises(ValueError, match="cache/v/table.json: masklet label 124 is not a class id"):
        label_map(segments, _table([1, 2], [3, 124]), "cache/v/table.json", 124)


@pytest.fixture(scope="module")
def sam3_world(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SAM 3 masklets (tiny random-weight checkpoint, 3 prompts) of the tiny synthetic val split,
    cached through the shipped config and ``python -m vssam2.masklets``."""
    from vssam2.masklets.__main__ import main as masklets_main
    from vssam2.masklets.sam3_model import write_tiny_sam3

    out = tmp_path_factory.mktemp("sam3_world")
    checkpoint = write_tiny_sam3(out / "sam3_tiny")
    prompts = out / "prompts.yaml"
    prompts.write_text("classes: [sky, person, road]\n")
    with one_thread():
        summary = masklets_main(
            [
                "--config",
                str(REPO / "configs" / "masklets" / "sam3_tiny_synthetic.yaml"),
                "--source.init_args.checkpoint",
                str(checkpoint),
                "--source.init_args.prompts",
                str(prompts),
                "--source.init_args.max_objects",
                "4",
                "--data.init_args.root",
                str(synthetic_root / "vspw"),
                "--data.init_args.clip_len",
                "8",
                "--cache_root",
                str(out / "cache"),
                "--progress",
                "false",
            ]
        )
    return {
        "vspw": synthetic_root / "vspw",
        "preds": synthetic_root / "predictions" / "vspw",
        "masklets": summary.directory,
        "out": out,
    }


def _evaluate(world: dict[str, Path], config: str, out: Path):
    return evaluate_main(
        [
            "test",
            "--config",
            str(REPO / "configs" / "evaluate" / "synthetic.yaml"),
            "--config",
            str(REPO / "configs" / "evaluate" / config),
            "--data.root",
            str(world["vspw"]),
            "--data.clip_len",
            "8",
            "--data.masklet_cache",
            str(world["masklets"]),
            "--data.pred_roots",
            json.dumps({m: str(world["preds"] / m) for m in ("sim_strong", "sim_flicker")}),
            "--trainer.default_root_dir",
            str(out),
            "--trainer.enable_progress_bar",
            "false",
            "--run.wandb",
            "disabled",
        ]
    )


def test_sam3_masklets_name_classes_refine_models_and_join_table3(sam3_world: dict[str, Path], tmp_path: Path) -> None:
    from vssam2.masklets.cache import open_cache
    from vssam2.tables import combine_results

    cache = open_cache(str(sam3_world["masklets"]))
    tables = [cache.read_table(video) for video in cache.videos()]
    labels = set(np.concatenate([t.label for t in tables]).tolist())
    assert labels and labels <= {vspw_id("sky"), vspw_id("person"), vspw_id("road")}  # every masklet is named

    named = _evaluate(sam3_world, "isam3_synthetic.yaml", tmp_path / "isam3")
    rows = named.model.report.rows
    assert list(rows)[:2] == ["I-SAM3", "I-SAM3_base"] and {"sim_strong", "sim_flicker"} <= set(rows)
    # I-SAM3 paints only the prompted classes; its base-filled row is at least as good on every pixel
    per_class = rows["I-SAM3"]["per_class_iou"]
    assert all(float(v) == 0 or np.isnan(float(v)) for c, v in enumerate(per_class) if c not in labels)
    assert float(rows["I-SAM3_base"]["mIoU"]) > float(rows["I-SAM3"]["mIoU"])

    refined = _evaluate(sam3_world, "refine_sam3_synthetic.yaml", tmp_path / "refine")
    assert {"SAM3-sim_strong", "SAM3-sim_flicker"} <= set(refined.model.report.rows)

    joined = combine_results([Path(named.trainer.logger.log_dir), Path(refined.trainer.logger.log_dir)])
    assert {"I-SAM3", "I-SAM3_base", "SAM3-sim_strong", "sim_strong"} <= set(joined)


def test_i_sam3_refuses_class_agnostic_masklets(synthetic_root: Path, tmp_path: Path) -> None:
    from vssam2.masklets.compute import compute_cache
    from vssam2.masklets.oracle import OracleSource

    data = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=8)
    summary = compute_cache(OracleSource(), data, "val", cache_root=tmp_path / "cache", progress=False)
    world = {
        "vspw": synthetic_root / "vspw",
        "preds": synthetic_root / "predictions" / "vspw",
        "masklets": summary.directory,
    }
    with pytest.raises(ValueError, match=r"masklets.json: the masklets carry no class"):
        _evaluate(world, "isam3_synthetic.yaml", tmp_path / "run")
