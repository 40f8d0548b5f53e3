"""Test-time refinement through evaluate.py: base rows unchanged, refined rows equal an offline
computation, cached masklets equal on-the-fly ones, written predictions score the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_command

from datamodules import VSPWDataModule
from evaluate import main as evaluate_main
from vssam2.masklets import OracleSource, compute_cache
from vssam2.metrics import VSSMetrics
from vssam2.refine import majority_vote

REPO = Path(__file__).resolve().parents[1]
MODELS = ("sim_strong", "sim_boundary", "sim_flicker")
CLIP = 7


def args_for(data: Path, out: Path, *extra: str) -> list[str]:
    pred_roots = {m: str(data / "predictions" / "vspw" / m) for m in MODELS}
    return [
        "test",
        "--config",
        str(REPO / "configs/evaluate/synthetic.yaml"),
        "--config",
        str(REPO / "configs/evaluate/refine_synthetic.yaml"),
        "--data.root",
        str(data / "vspw"),
        "--data.pred_roots",
        json.dumps(pred_roots),
        "--data.clip_len",
        str(CLIP),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        "--run.wandb",
        "disabled",
        *extra,
    ]


def without_refine_config(args: list[str]) -> list[str]:
    i = args.index(str(REPO / "configs/evaluate/refine_synthetic.yaml"))
    return args[: i - 1] + args[i + 1 :]


def results_of(out: Path, name: str = "synthetic_refine") -> dict:
    return json.loads((out / name / "version_0" / "results.json").read_text())["methods"]


def offline_refined(data: Path, method: str) -> dict[str, float]:
    dm = VSPWDataModule(
        root=str(data / "vspw"), pred_roots={method: str(data / "predictions/vspw" / method)}, clip_len=CLIP
    )
    metrics, source = VSSMetrics(), OracleSource()
    for batch in dm.eval_dataset("val", 0, 1):
        if batch["start"] == 0:
            source.begin_video(batch["video"], *batch["gt"].shape[1:])
        seg = source.add_chunk(batch["frames"], batch["start"], gt=batch["gt"])
        refined = majority_vote(seg, batch["preds"][method])
        metrics.update(refined, batch["gt"], video=batch["video"], start=batch["start"], last=batch["last"])
    return {k: v.item() for k, v in metrics.compute().items() if k != "per_class_iou"}


def test_refinement_rows_and_cost(synthetic_root: Path, tmp_path: Path, capsys):
    evaluate_main(
        args_for(
            synthetic_root, tmp_path / "refine", "--trainer.callbacks.init_args.write_dir", str(tmp_path / "refined")
        )
    )
    printed = capsys.readouterr().out
    assert "Refinement cost on cpu" in printed and "| oracle-sim_boundary |" in printed
    got = results_of(tmp_path / "refine")
    assert list(got) == [row for m in MODELS for row in (m, f"oracle-{m}")]
    run_dir = tmp_path / "refine" / "synthetic_refine" / "version_0"
    deltas = json.loads((run_dir / "results.json").read_text())["deltas"]
    gain = deltas["sim_boundary -> oracle-sim_boundary"]
    assert gain["mBIoU"] == pytest.approx(got["oracle-sim_boundary"]["mBIoU"] - got["sim_boundary"]["mBIoU"])
    assert (run_dir / "per_class_delta.png").stat().st_size > 1000
    assert "| sim_boundary → oracle-sim_boundary | +" in (run_dir / "results.md").read_text()
    # Overlays: frame, GT, 3 base, 3 refined and the masklets side by side.
    from PIL import Image

    overlay = Image.open(next((run_dir / "overlays").glob("*.png")))
    assert overlay.size[0] == 64 * (2 + 3 + 3 + 1)

    evaluate_main(without_refine_config(args_for(synthetic_root, tmp_path / "plain")) + ["--run.name", "plain"])
    plain = results_of(tmp_path / "plain", "plain")
    for m in MODELS:
        assert got[m] == plain[m]  # the callback leaves the base numbers untouched
    expected = offline_refined(synthetic_root, "sim_boundary")
    for name, value in expected.items():
        assert got["oracle-sim_boundary"][name] == pytest.approx(value, abs=1e-12)
    assert got["oracle-sim_boundary"]["mIoU"] > got["sim_boundary"]["mIoU"]
    assert got["oracle-sim_boundary"]["mBIoU"] > got["sim_boundary"]["mBIoU"]

    # The written refined predictions score exactly like the refined row.
    written = tmp_path / "refined" / "oracle-sim_boundary"
    evaluate_main(
        [
            "test",
            "--config",
            str(REPO / "configs/evaluate/synthetic.yaml"),
            "--data.root",
            str(synthetic_root / "vspw"),
            "--data.pred_roots",
            json.dumps({"w": str(written)}),
            "--data.clip_len",
            str(CLIP),
            "--trainer.default_root_dir",
            str(tmp_path / "rescore"),
            "--trainer.enable_progress_bar",
            "false",
            "--run.wandb",
            "disabled",
            "--run.name",
            "rescore",
        ]
    )
    rescored = results_of(tmp_path / "rescore", "rescore")["w"]
    assert rescored == got["oracle-sim_boundary"]


def test_cached_masklets_equal_on_the_fly(synthetic_root: Path, tmp_path: Path):
    dm = VSPWDataModule(root=str(synthetic_root / "vspw"), clip_len=CLIP)
    cache = compute_cache(OracleSource(), dm, "val", cache_root=str(tmp_path / "cache"), progress=False)
    cached_args = without_refine_config(args_for(synthetic_root, tmp_path / "cached")) + [
        "--trainer.callbacks+=callbacks.TestTimeRefinement",
        "--trainer.callbacks.name_format",
        "oracle-{method}",
        "--data.masklet_cache",
        str(cache.directory),
        "--run.name",
        "synthetic_refine",
    ]
    evaluate_main(cached_args)
    evaluate_main(args_for(synthetic_root, tmp_path / "fly"))
    assert results_of(tmp_path / "cached") == results_of(tmp_path / "fly")


def test_missing_masklets_is_a_clear_error(synthetic_root: Path, tmp_path: Path):
    args = without_refine_config(args_for(synthetic_root, tmp_path)) + [
        "--trainer.callbacks+=callbacks.TestTimeRefinement"
    ]
    with pytest.raises(KeyError, match="masklet_cache"):
        evaluate_main(args)


# slow: a second 2-process run of evaluate.py; the default run keeps test_evaluate_cli.py's one
# (the refinement runs inside the same scorer, per rank, on whole videos)
@pytest.mark.slow
def test_ddp_two_processes_equal_one(synthetic_root: Path, tmp_path: Path):
    def run(out: Path, devices: int) -> dict:
        args = args_for(
            synthetic_root,
            out,
            "--trainer.devices",
            str(devices),
            "--trainer.strategy",
            "ddp" if devices > 1 else "auto",
        )
        run_command(str(REPO / "evaluate.py"), *args)
        return results_of(out)

    assert run(tmp_path / "one", 1) == run(tmp_path / "two", 2)


def test_wandb_offline_run_has_refinement_media(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = args_for(synthetic_root, tmp_path, "--data.max_videos", "1")
    args[args.index("--run.wandb") + 1] = "offline"
    evaluate_main(args)
    media = next((tmp_path / "synthetic_refine" / "wandb").glob("offline-run-*")) / "files" / "media"
    tables = [p.name for p in (media / "table").rglob("*.table.json")]
    assert any("refinement_gains" in name for name in tables) and any("results" in name for name in tables)
    assert any("per_class_delta" in p.name for p in (media / "images").rglob("*.png"))


def test_multi_model_run_equals_separate_runs(synthetic_root: Path, tmp_path: Path):
    evaluate_main(args_for(synthetic_root, tmp_path / "all"))
    together = results_of(tmp_path / "all")
    for m in ("sim_boundary", "sim_flicker"):
        args = args_for(synthetic_root, tmp_path / m)
        args[args.index("--data.pred_roots") + 1] = json.dumps({m: str(synthetic_root / "predictions" / "vspw" / m)})
        evaluate_main(args)
        alone = results_of(tmp_path / m)
        assert alone == {m: together[m], f"oracle-{m}": together[f"oracle-{m}"]}
