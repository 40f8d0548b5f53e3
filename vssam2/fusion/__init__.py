"""Refinement rules beyond the fixed majority vote (docs/refinement.md).

- :mod:`~vssam2.fusion.rules`: the rule interface and the hand-made rules (majority vote,
  quality gate, probability-weighted vote).
- :mod:`~vssam2.fusion.statistics`: the per-masklet statistics rules decide from.
- :mod:`~vssam2.fusion.gains`: exact pixel outcomes of every decision from joint histograms.
- :mod:`~vssam2.fusion.learned`: the learned rule (network + checkpoint loading).
"""

from vssam2.fusion.learned import FusionNet, LearnedFusion
from vssam2.fusion.rules import MajorityVote, ProbabilityVote, QualityGate, RefinementRule, RuleInputs
from vssam2.fusion.statistics import STATS_VERSION, MaskletStatistics, StatisticsConfig, masklet_statistics

__all__ = [
    "STATS_VERSION",
    "FusionNet",
    "LearnedFusion",
    "MajorityVote",
    "MaskletStatistics",
    "ProbabilityVote",
    "QualityGate",
    "RefinementRule",
    "RuleInputs",
    "StatisticsConfig",
    "masklet_statistics",
]
