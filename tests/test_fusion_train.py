"""Learned refinement end to end: the statistics cache (resumes), train.py fits the rule and tests it
beside the vote, the exact cached validation equals the pixel-scored test, evaluate.py loads the
rule from its checkpoint, and wrong caches / checkpoints are refused with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from datamodules import VSPWDataModule
from evaluate import main as evaluate_main
from train import main as train_main
from vssam2.errors import DataError
from vssam2.fusion import LearnedFusion, MajorityVote
from vssam2.fusion.compute import compute_fusion_cache
from vssam2.masklets.compute import compute_cache
from vssam2.masklets.superpixel import SuperpixelSource
from vssam2.replay import PredictionReplay
from vssam2.synthetic import SyntheticConfig, write_synthetic

REPO = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = REPO / "configs" / "train" / "fusion_superpixel_synthetic.yaml"
EVAL_CONFIG = REPO / "configs" / "evaluate" / "synthetic.yaml"
RULES_CONFIG = REPO / "configs" / "evaluate" / "refine_rules_synthetic.yaml"
DATA = SyntheticConfig(
    height=48, width=64, min_frames=12, max_frames=14, videos={"train": 3, "val": 2, "test": 0}, models=("sim_strong",)
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data with train and val predictions, superpixel masklets of both, the statistics cache."""
    root = tmp_path_factory.mktemp("fusion")
    paths = write_synthetic(root / "data", DATA)  # predictions of train and val
    preds = root / "data" / "predictions" / "vspw"
    data = VSPWDataModule(root=str(paths["vspw"]), clip_len=8)
    source = SuperpixelSource(n_segments=40)
    for split in ("train", "val"):
        masklets = compute_cache(source, data, split, cache_root=root / "masklets", progress=False).directory
    pred_roots = {"sim_strong": str(preds / "sim_strong")}
    data = VSPWDataModule(root=str(paths["vspw"]), clip_len=8, masklet_cache=str(masklets), pred_roots=pred_roots)
    for split in ("train", "val"):
        (summary,) = compute_fusion_cache(data, split, ["sim_strong"], fusion_root=root / "fusion", progress=False)
    return {"root": root, "vspw": paths["vspw"], "masklets": masklets, "fusion": summary.directory, "preds": preds}


def test_statistics_cache_resumes(world: dict[str, Path]) -> None:
    data = VSPWDataModule(
        root=str(world["vspw"]),
        clip_len=8,
        masklet_cache=str(world["masklets"]),
        pred_roots={"sim_strong": str(world["preds"] / "sim_strong")},
    )
    (again,) = compute_fusion_cache(data, "val", ["sim_strong"], fusion_root=world["root"] / "fusion", progress=False)
    assert again.directory == world["fusion"] and not again.computed and len(again.skipped) == 2
    with pytest.raises(ValueError, match="not a prediction folder"):
        compute_fusion_cache(data, "val", ["sim_other"], fusion_root=world["root"] / "fusion", progress=False)
    with pytest.raises(ValueError, match="probability folder"):
        compute_fusion_cache(data, "val", ["sim_strong"], fusion_root=world["root"] / "x", use_probs=True)


def train_args(world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(TRAIN_CONFIG),
        "--data.root",
        str(world["vspw"]),
        "--data.clip_len",
        "8",
        "--data.masklet_cache",
        str(world["masklets"]),
        "--data.fusion_cache",
        str(world["fusion"]),
        "--data.pred_roots",
        json.dumps({"sim_strong": str(world["preds"] / "sim_strong")}),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.callbacks.dirpath",
        str(out / "rules"),
        "--trainer.enable_progress_bar",
        "false",
        "--run.wandb",
        "disabled",
        "--trainer.max_epochs",
        "3",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("fusion_run")
    cli = train_main(train_args(world, out, "--test", "false"))
    val = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)  # as train.py does
    return {"out": out, "cli": cli, "val": val, "checkpoint": out / "rules" / "sim_strong.ckpt"}


def test_train_fits_and_tests_the_rule_beside_the_vote(trained: dict[str, object]) -> None:
    cli = trained["cli"]
    rows = cli.model.report.rows
    assert list(rows) == ["sim_strong", "SP-sim_strong", "SP-sim_strong (learned)"]
    assert ("sim_strong", "SP-sim_strong (learned)") in cli.model.report.pairs
    val = trained["val"]
    assert {"val/mIoU", "val/base/mIoU", "val/vote/mIoU", "val/upper/mIoU"} <= set(val)
    # The exact validation from the joint histograms is the pixel-scored test of the same maps
    # (test split = val split, the last epoch's rule is the one tested).
    # mVC8 too, from the window signatures.
    for prefix, row in [("val", "SP-sim_strong (learned)"), ("val/vote", "SP-sim_strong"), ("val/base", "sim_strong")]:
        for metric in ("mIoU", "mVC8"):
            want = float(rows[row][metric]) * 100
            assert val[f"{prefix}/{metric}"] == pytest.approx(want, abs=1e-3), (prefix, metric)
    # the calibration keeps mVC8 on its held-out videos at least at the base's
    assert val["val/calibration/mVC8"] >= val["val/calibration/base_mVC8"] - 1e-6
    assert val["val/upper/mIoU"] >= max(val["val/mIoU"], val["val/vote/mIoU"]) - 1e-6
    results = json.loads((Path(cli.trainer.logger.log_dir) / "results.json").read_text())
    assert "SP-sim_strong (learned)" in json.dumps(results)
    info = torch.load(trained["checkpoint"], map_location="cpu", weights_only=False)["vssam2_fusion"]
    assert info["base_method"] == "sim_strong" and info["statistics"]["version"] == 1
    assert info["masklets"]["directory"] == Path(str(cli.datamodule.masklet_cache.directory)).name


def test_evaluate_loads_the_rule_from_its_checkpoint(
    world: dict[str, Path], trained: dict[str, object], tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    text = RULES_CONFIG.read_text().replace("demo_run/rules/fusion_superpixel_synthetic", str(trained["out"] / "rules"))
    rules.write_text(text)
    cli = evaluate_main(
        [
            "test",
            "--config",
            str(EVAL_CONFIG),
            "--config",
            str(rules),
            "--data.root",
            str(world["vspw"]),
            "--data.clip_len",
            "8",
            "--data.masklet_cache",
            str(world["masklets"]),
            "--data.pred_roots",
            json.dumps({"sim_strong": str(world["preds"] / "sim_strong")}),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
            "--run.wandb",
            "disabled",
        ]
    )
    rows = cli.model.report.rows
    assert list(rows) == ["sim_strong", "SP-sim_strong", "SP-sim_strong (gate)", "SP-sim_strong (learned)"]
    tested = trained["cli"].model.report.rows
    for row in ("SP-sim_strong", "SP-sim_strong (learned)"):
        for metric in ("mIoU", "mBIoU", "mVC8"):
            assert float(rows[row][metric]) == pytest.approx(float(tested[row][metric])), (row, metric)


def test_wrong_checkpoints_are_refused(trained: dict[str, object], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        LearnedFusion(str(tmp_path / "missing.ckpt"))
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(DataError, match="not a learned refinement rule"):
        LearnedFusion(str(plain))
    checkpoint = torch.load(trained["checkpoint"], map_location="cpu", weights_only=False)
    checkpoint["vssam2_fusion"]["statistics"]["version"] = 0
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.raises(DataError, match=r"old\.ckpt: field statistics\.version is 0"):
        LearnedFusion(str(old))
    rule = LearnedFusion(str(trained["checkpoint"]))
    assert rule.applies_to("sim_strong") and not rule.applies_to("sim_flicker")
    assert LearnedFusion(str(trained["checkpoint"]), methods=["sim_flicker"]).applies_to("sim_flicker")
    from vssam2.fusion.rules import RuleInputs
    from vssam2.refine import count_votes

    counts = count_votes(torch.ones(1, 4, 4, dtype=torch.int32), torch.zeros(1, 4, 4, dtype=torch.uint8), 19, 255)
    with pytest.raises(ValueError, match="trained for 124 classes, this run scores 19"):
        rule.decide(RuleInputs(counts, 19, 255, 1))
    assert MajorityVote().applies_to("anything")


def test_a_cache_of_other_statistics_is_refused(world: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="top_k: 2 vs 3"):
        train_main(train_args(world, tmp_path, "--model.top_k", "2"))


@pytest.mark.parametrize("name", ["fusion_superpixel_synthetic.yaml", "fusion_sam2_vspw.yaml"])
def test_shipped_fusion_train_configs_parse(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--config", str(REPO / "configs" / "train" / name), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "vssam2.fusion.model.FusionModel" in printed and "fusion_cache" in printed


class LogitModel(PredictionReplay):
    """A live model that hands logits, not ids: its stored prediction, made soft."""

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        preds = super().forward(batch)
        out = {}
        for method, ids in preds.items():
            generator = torch.Generator().manual_seed(int(batch["start"]))
            logits = torch.randn((ids.shape[0], 124, *ids.shape[1:]), generator=generator)
            out[method] = logits.scatter_add(1, ids.long().unsqueeze(1), torch.full_like(logits[:, :1], 6.0))
        return out


def test_a_live_model_hands_logits_to_the_probability_vote(world: dict[str, Path]) -> None:
    from lightning.pytorch import Trainer

    from callbacks import TestTimeRefinement
    from vssam2.console import quiet_dependency_chatter
    from vssam2.fusion import ProbabilityVote

    quiet_dependency_chatter()

    data = VSPWDataModule(
        root=str(world["vspw"]),
        clip_len=8,
        load_frames=False,
        masklet_cache=str(world["masklets"]),
        pred_roots={"sim_strong": str(world["preds"] / "sim_strong")},
    )
    refine = TestTimeRefinement(rules=[MajorityVote(), ProbabilityVote()], name_format="SP-{method}")
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[refine])
    model = LogitModel()
    trainer.test(model, datamodule=data, verbose=False)
    rows = model.report.rows
    assert list(rows) == ["sim_strong", "SP-sim_strong", "SP-sim_strong (prob_vote)"]
    # The scored base row is the logits' arg-max: the stored prediction (its class got +6).
    replay = PredictionReplay()
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.test(replay, datamodule=data, verbose=False)
    assert float(rows["sim_strong"]["mIoU"]) == pytest.approx(float(replay.report.rows["sim_strong"]["mIoU"]), abs=0.02)
    assert 0 < float(rows["SP-sim_strong (prob_vote)"]["mIoU"]) <= 1
