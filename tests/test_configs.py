"""Every shipped config parses with the command it belongs to (typed values, known keys, the
class paths import), and a new config file cannot be added without being listed here."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from evaluate import main as evaluate_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# evaluate.py configs, each with the base config it extends (refine configs add to a base).
EVALUATE = {
    "synthetic.yaml": [],
    "synthetic_vipseg.yaml": [],
    "vspw.yaml": [],
    "vipseg.yaml": [],
    "refine_synthetic.yaml": ["synthetic.yaml"],
    "refine_vspw.yaml": ["vspw.yaml"],
    "refine_rules_synthetic.yaml": ["synthetic.yaml"],
    "refine_sam3_synthetic.yaml": ["synthetic.yaml"],
    "refine_sam3_vspw.yaml": ["vspw.yaml"],
    "isam3_synthetic.yaml": ["synthetic.yaml"],
    "isam3_vspw.yaml": ["vspw.yaml"],
    "iclip_synthetic.yaml": ["synthetic.yaml"],
    "iclip_vspw.yaml": [],  # self-contained
}
MASKLETS = [
    "oracle_synthetic.yaml",
    "degraded_oracle_synthetic.yaml",
    "superpixel_synthetic.yaml",
    "sam2_tiny_synthetic.yaml",
    "sam2_vspw.yaml",
    "sam2_tiny_one_pass_synthetic.yaml",
    "sam2_isam2_one_pass_vspw.yaml",
    "sam3_tiny_synthetic.yaml",
    "sam3_vspw.yaml",
]
# Sweeps (evaluate.py test with vssam2.sweep.MaskletSweep).
ABLATION = [
    "grid_synthetic.yaml",
    "iou_synthetic.yaml",
    "min_share_synthetic.yaml",
    "rules_synthetic.yaml",
    "sources_synthetic.yaml",
    "stability_synthetic.yaml",
    "window_points_synthetic.yaml",
    "window_synthetic.yaml",
    "iou_vspw.yaml",
    "points_vspw.yaml",
    "sources_vspw.yaml",
    "stability_vspw.yaml",
    "window_vspw.yaml",
]
# Refinement statistics caches (python -m vssam2.fusion).
FUSION = ["superpixel_synthetic.yaml", "sam2_vspw.yaml"]
# train/ and features/ configs are parsed in tests/test_classifier.py and tests/test_fusion_train.py.
COVERED_ELSEWHERE = {"train", "features", "prompts"}  # prompts/: tests/test_sam3_prompts.py


def test_every_config_file_is_covered():
    listed = {f"evaluate/{n}" for n in EVALUATE} | {f"masklets/{n}" for n in MASKLETS}
    listed |= {f"ablation/{n}" for n in ABLATION} | {f"fusion/{n}" for n in FUSION}
    shipped = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml") if p.parent.name not in COVERED_ELSEWHERE}
    assert shipped == listed, f"configs not exercised by a test: {sorted(shipped - listed)}"


def test_every_train_features_and_prompts_config_is_named_by_a_test() -> None:
    """The folders covered elsewhere: each file must appear by name in some test file (where it
    is parsed or run), so a new config cannot ship untested."""
    tests = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    unnamed = sorted(
        str(p.relative_to(CONFIGS))
        for folder in COVERED_ELSEWHERE
        for p in (CONFIGS / folder).glob("*.yaml")
        if p.name not in tests
    )
    assert not unnamed, f"configs no test names: {unnamed}"


@pytest.mark.parametrize("name", list(EVALUATE))
def test_evaluate_configs_parse(name: str, capsys) -> None:
    args = [a for base in [*EVALUATE[name], name] for a in ("--config", str(CONFIGS / "evaluate" / base))]
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["test", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    model = {"isam3": "vssam2.named_masklets.NamedMasklets", "iclip": "vssam2.zero_shot.ZeroShotCLIP"}.get(
        name[:5], "vssam2.replay.PredictionReplay"
    )
    assert model in printed and "boundary_width" in printed


@pytest.mark.parametrize("name", MASKLETS)
def test_masklet_configs_parse(name: str) -> None:
    from vssam2.masklets.__main__ import build_parser

    config = build_parser().parse_args(["--config", str(CONFIGS / "masklets" / name)])
    assert config.source.class_path.startswith("vssam2.masklets.") and config.split in ("train", "val")


@pytest.mark.parametrize("name", FUSION)
def test_fusion_configs_parse(name: str) -> None:
    from vssam2.fusion.__main__ import build_parser

    config = build_parser().parse_args(["--config", str(CONFIGS / "fusion" / name)])
    assert config.data.init_args.masklet_cache and config.splits == ["train", "val"]
    assert set(config.methods) <= set(config.data.init_args.pred_roots)
    assert config.consistency.window == 8  # the mVC8 the learned rule is guarded on


@pytest.mark.parametrize("name", ABLATION)
def test_ablation_configs_parse_and_expand(name: str, capsys) -> None:
    """The sweep config parses with evaluate.py, and its grid expands on its source: every swept
    parameter applies to the source, every point is distinct (no model is built)."""
    from vssam2.sweep import build_source, expand_grid

    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["test", "--config", str(CONFIGS / "ablation" / name), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "vssam2.sweep.MaskletSweep"
    init = config["model"]["init_args"]
    source = build_source(init["source"]) if init.get("source") else None
    data = config["data"]["init_args"]
    points = expand_grid(init["grid"], source, data["clip_len"], "VSPW", data["num_classes"])
    assert len(points) == math.prod(len(values) for values in init["grid"].values()) >= 2
