"""vssam2.ablation: parameter sweeps over the masklet cache, refined scores, table / JSON / plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from datamodules import VSPWDataModule
from vssam2.ablation import main, run_ablation, with_parameter
from vssam2.masklets.oracle import OracleSource
from vssam2.masklets.superpixel import SuperpixelSource
from vssam2.metrics import METRIC_NAMES, MetricConfig, VSSMetrics
from vssam2.refine import majority_vote

MODELS = ("sim_strong", "sim_flicker")
ROOT = Path(__file__).resolve().parents[1]


def _data(root: Path, **kwargs) -> VSPWDataModule:
    preds = root / "predictions" / "vspw"
    return VSPWDataModule(
        root=str(root / "vspw"), pred_roots={m: str(preds / m) for m in MODELS}, clip_len=8, load_frames=False, **kwargs
    )


@pytest.fixture(scope="module")
def superpixel_run(synthetic_root, tmp_path_factory):
    """One superpixel sweep (n_segments 40, 120) on 2 val videos, run twice on the same cache."""
    tmp = tmp_path_factory.mktemp("ablation")
    source = SuperpixelSource(n_segments=80)
    args = dict(
        split="val", parameter="n_segments", values=[40, 120], cache_root=tmp / "cache", max_videos=2, progress=False
    )
    first = run_ablation(source, _data(synthetic_root), out_dir=tmp / "out1", **args)
    done = sorted((tmp / "cache").glob("*/*/.done"))
    mtimes = {path: path.stat().st_mtime_ns for path in sorted((tmp / "cache").rglob("*")) if path.is_file()}
    second = run_ablation(source, _data(synthetic_root), out_dir=tmp / "out2", **args)
    mtimes_after = {path: path.stat().st_mtime_ns for path in sorted((tmp / "cache").rglob("*")) if path.is_file()}
    return dict(tmp=tmp, source=source, first=first, second=second, done=done, mtimes=mtimes, mtimes_after=mtimes_after)


def test_rows_for_every_value_and_model(superpixel_run):
    rows = superpixel_run["first"]
    assert [(r["label"], r["model"]) for r in rows] == [
        ("base", "sim_strong"),
        ("base", "sim_flicker"),
        ("40", "sim_strong"),
        ("40", "sim_flicker"),
        ("120", "sim_strong"),
        ("120", "sim_flicker"),
    ]
    for row in rows:
        assert all(0.0 <= row[m] <= 1.0 for m in METRIC_NAMES)
    refined = [r for r in rows if not r["base"]]
    assert len({r["cache_dir"] for r in refined}) == 2  # one cache folder per value
    assert all(r["computed"] == 2 and r["skipped"] == 0 and r["clip_len"] == 8 for r in refined)
    assert superpixel_run["source"].n_segments == 80  # the given source is not modified


def test_refined_numbers_equal_direct_computation(superpixel_run, synthetic_root):
    row = next(r for r in superpixel_run["first"] if r["label"] == "120" and r["model"] == "sim_flicker")
    dm = _data(synthetic_root, max_videos=2, masklet_cache=row["cache_dir"])
    metrics, base = (
        VSSMetrics(MetricConfig(num_classes=dm.num_classes)),
        VSSMetrics(MetricConfig(num_classes=dm.num_classes)),
    )
    for chunk in dm.eval_dataset("val", rank=0, world_size=1):
        pred = chunk["preds"]["sim_flicker"]
        where = dict(video=chunk["video"], start=chunk["start"], last=chunk["last"])
        metrics.update(majority_vote(chunk["segments"], pred, num_classes=dm.num_classes), chunk["gt"], **where)
        base.update(pred, chunk["gt"], **where)
    direct, direct_base = metrics.compute(), base.compute()
    base_row = next(r for r in superpixel_run["first"] if r["base"] and r["model"] == "sim_flicker")
    for name in METRIC_NAMES:
        assert math.isclose(row[name], float(direct[name]), rel_tol=1e-9, abs_tol=1e-12), name
        assert math.isclose(base_row[name], float(direct_base[name]), rel_tol=1e-9, abs_tol=1e-12), name


def test_second_run_reuses_the_cache(superpixel_run):
    second = [r for r in superpixel_run["second"] if not r["base"]]
    assert all(r["computed"] == 0 and r["skipped"] == 2 for r in second)
    assert len(superpixel_run["done"]) == 4  # 2 values x 2 videos
    assert superpixel_run["mtimes_after"] == superpixel_run["mtimes"]  # nothing rewritten
    for a, b in zip(superpixel_run["first"], superpixel_run["second"]):
        assert all(a[m] == b[m] for m in METRIC_NAMES)


def test_outputs_written(superpixel_run):
    out = superpixel_run["tmp"] / "out1"
    table = (out / "ablation.md").read_text()
    assert "| n_segments | Model | mIoU | WIoU | mBIoU | mVC8 | mVC16 |" in table
    assert "| base | sim_strong |" in table and "| 120 | sim_flicker |" in table
    record = json.loads((out / "ablation.json").read_text())
    assert record["parameter"] == "n_segments" and record["values"] == [40, 120] and len(record["rows"]) == 6
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_parameter_paths_raise_clearly(synthetic_root, tmp_path):
    source = SuperpixelSource()
    with pytest.raises(AttributeError, match=r"'proposal\.points_per_side'.*has no attribute 'proposal'"):
        run_ablation(source, _data(synthetic_root), "val", "proposal.points_per_side", [8], tmp_path, tmp_path)
    with pytest.raises(AttributeError, match="public attributes"):
        with_parameter(source, "_prev", 1)
    with pytest.raises(TypeError, match="is an int"):
        with_parameter(source, "n_segments", "many")
    with pytest.raises(ValueError, match="same masklet configuration"):
        run_ablation(source, _data(synthetic_root), "val", "n_segments", [50, 50], tmp_path, tmp_path)
    with pytest.raises(ValueError, match="not prediction sources"):
        run_ablation(source, _data(synthetic_root), "val", "n_segments", [50], tmp_path, tmp_path, methods=["nope"])
    assert not list(tmp_path.glob("*/*/.done"))  # nothing computed before the checks


def test_with_parameter_sets_nested_dataclass_fields():
    from vssam2.masklets.proposals import ProposalParams
    from vssam2.masklets.sam2_video import SAM2VideoSource

    source = SAM2VideoSource("vssam2-tiny-test", proposal=ProposalParams(points_per_side=8))
    clone = with_parameter(source, "proposal.points_per_side", 16)
    assert clone.proposal.points_per_side == 16 and source.proposal.points_per_side == 8
    assert clone.config()["proposal"]["points_per_side"] == 16
    with pytest.raises(ValueError, match="window must be"):
        with_parameter(source, "window", 0)


def test_cli_sources_mode_writes_table_json_png(synthetic_root, tmp_path):
    config = yaml.safe_load((ROOT / "configs" / "ablation" / "sources_synthetic.yaml").read_text())
    config["values"] = config["values"][:2]  # oracle, superpixel (SAM2 is covered below)
    config["data"]["init_args"]["root"] = str(synthetic_root / "vspw")
    config["data"]["init_args"]["pred_roots"] = {m: str(synthetic_root / "predictions" / "vspw" / m) for m in MODELS}
    config.update(cache_root=str(tmp_path / "cache"), out_dir=str(tmp_path / "out"), max_videos=1, progress=False)
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(config))
    rows = main(["--config", str(path)])
    assert [r["label"] for r in rows if not r["base"]] == ["oracle", "oracle", "superpixel", "superpixel"]
    oracle = {r["model"]: r for r in rows if r["label"] == "oracle"}
    base = {r["model"]: r for r in rows if r["base"]}
    assert oracle["sim_flicker"]["mVC8"] > base["sim_flicker"]["mVC8"]  # GT masklets remove flicker
    for name in ("ablation.md", "ablation.json", "ablation.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "| oracle | sim_strong |" in (tmp_path / "out" / "ablation.md").read_text()


# slow: the window sweep with the tiny SAM2 model (about a minute); the CLI itself is covered by
# test_cli_sources_mode_writes_table_json_png and SAM2 masklet caching by test_masklet_cache.py
@pytest.mark.slow
def test_cli_window_ablation_tiny_sam2(synthetic_root, tmp_path):
    """configs/ablation/window_synthetic.yaml with the tiny random SAM2, two windows, one video."""
    rows = main(
        [
            "--config",
            str(ROOT / "configs" / "ablation" / "window_synthetic.yaml"),
            "--data.init_args.root",
            str(synthetic_root / "vspw"),
            "--data.init_args.pred_roots",
            json.dumps({"sim_strong": str(synthetic_root / "predictions/vspw/sim_strong")}),
            "--values",
            "[1, 4]",
            "--max_videos",
            "1",
            "--progress",
            "false",
            "--cache_root",
            str(tmp_path / "cache"),
            "--out_dir",
            str(tmp_path / "out"),
        ]
    )
    refined = [r for r in rows if not r["base"]]
    assert [(r["value"], r["clip_len"], r["computed"]) for r in refined] == [(1, 1, 1), (4, 4, 1)]
    assert len({r["cache_dir"] for r in refined}) == 2
    assert (tmp_path / "out" / "ablation.png").exists()
    assert json.loads((tmp_path / "out" / "ablation.json").read_text())["values"] == [1, 4]


def test_unused_oracle_is_untouched():
    source = OracleSource()
    clone = with_parameter(source, "connectivity", 4)
    assert clone.connectivity == 4 and source.connectivity == 8
