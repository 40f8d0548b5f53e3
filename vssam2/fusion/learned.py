"""The learned refinement rule: a small network choosing, per masklet, keep or paint candidate j.

:class:`FusionNet` scores the 1 + k actions of each masklet from its statistics
(:mod:`vssam2.fusion.statistics`) and learned embeddings of its candidate classes — the
class identity is what lets it learn class-dependent base errors ("this model calls dogs
cats": a masklet voted cat with dog second is a dog). :class:`LearnedFusion` is the rule
that runs it at test time, from a checkpoint written by ``train.py`` with
:class:`vssam2.fusion.model.FusionModel`. The checkpoint records the statistics it was
trained on; another class count, statistics version or feature set is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vssam2.errors import DataError
from vssam2.fusion.gains import actions_to_paint
from vssam2.fusion.rules import RefinementRule, RuleInputs
from vssam2.fusion.statistics import STATS_VERSION, StatisticsConfig, feature_names, masklet_statistics
from vssam2.heads import MLPHead

#: Key of the learned rule's description in a Lightning checkpoint.
CHECKPOINT_KEY = "vssam2_fusion"


class FusionNet(nn.Module):
    """Scores the actions of each masklet: keep (0) or paint candidate j (1…k).

    Args:
        num_features: statistics per masklet (F).
        num_classes: C (candidate embeddings; index C = "no candidate").
        top_k: candidates per masklet (k).
        hidden_dims: hidden widths of the MLP.
        class_embedding_dim: width of each candidate's class embedding (0 = none).
        dropout: dropout of the MLP.
        vote_prior: initial logit of "paint candidate 1" over the other actions: training
            starts from the paper's rule and learns where to leave it.
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        top_k: int = 3,
        hidden_dims: Sequence[int] = (64, 64),
        class_embedding_dim: int = 4,
        dropout: float = 0.3,
        vote_prior: float = 2.0,
    ) -> None:
        super().__init__()
        self.config = {
            "num_features": int(num_features),
            "num_classes": int(num_classes),
            "top_k": int(top_k),
            "hidden_dims": [int(h) for h in hidden_dims],
            "class_embedding_dim": int(class_embedding_dim),
            "dropout": float(dropout),
            "vote_prior": float(vote_prior),
        }
        self.num_classes = int(num_classes)
        self.top_k = int(top_k)
        self.embed = nn.Embedding(num_classes + 1, class_embedding_dim) if class_embedding_dim > 0 else None
        # Per-feature standardisation, fitted on the training rows (set_normalization).
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.mlp = MLPHead(num_features + top_k * class_embedding_dim, 1 + top_k, hidden_dims, dropout)
        with torch.no_grad():
            self.mlp.layers[-1].bias[1] += vote_prior

    def set_normalization(self, features: torch.Tensor) -> None:
        """Fits the standardisation on (N, F) training statistics."""
        features = features.double()
        self.mean.copy_(features.mean(dim=0).float())
        self.std.copy_(features.std(dim=0).clamp(min=1e-6).float() if features.shape[0] > 1 else self.std)

    def forward(self, features: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(N, F) statistics, (N, k) int64 candidates (−1 = none) → (N, 1 + k) logits, −inf where
        an action has no candidate."""
        x = (features.float() - self.mean) / self.std
        if self.embed is not None:
            index = torch.where(candidates >= 0, candidates, torch.full_like(candidates, self.num_classes))
            x = torch.cat([x, self.embed(index).flatten(1)], dim=1)
        logits = self.mlp(x)
        invalid = torch.cat([torch.zeros_like(candidates[:, :1], dtype=torch.bool), candidates < 0], dim=1)
        return logits.masked_fill(invalid, float("-inf"))


Fallback = Literal["vote", "base"]
FALLBACKS: tuple[str, ...] = ("vote", "base")
#: Margins tried by the calibration (inf = always the fallback).
CALIBRATION_MARGINS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, float("inf"))


@dataclass
class Calibration:
    """When the learned rule overrides its fallback (chosen on held-out training videos).

    The network's choice replaces the fallback's action (the vote's winner, or keeping the
    base) only where its probability exceeds the fallback action's by more than ``margin``:
    a rule that is unsure does what the fallback does.

    Attributes:
        fallback: "vote" (paint candidate 1) or "base" (keep the base prediction).
        margin: probability margin an override needs (0 = plain arg-max, inf = the fallback).
    """

    fallback: Fallback = "vote"
    margin: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"fallback": self.fallback, "margin": self.margin}


def calibrated_actions(logits: torch.Tensor, candidates: torch.Tensor, calibration: Calibration) -> torch.Tensor:
    """(N,) action per masklet: the network's arg-max where it beats the fallback by the margin.

    Args:
        logits: (N, 1 + k) action logits (−inf where no candidate).
        candidates: (N, k) candidate classes (−1 = none).
        calibration: fallback and margin.
    """
    p = torch.softmax(logits.float(), dim=1)  # (N, 1 + k)
    best = p.argmax(dim=1)
    if calibration.fallback == "vote":
        fallback = (candidates[:, 0] >= 0).long()  # candidate 1 is the vote's winner
    else:
        fallback = torch.zeros_like(best)
    gap = p.gather(1, best[:, None])[:, 0] - p.gather(1, fallback[:, None])[:, 0]
    return torch.where(gap > calibration.margin, best, fallback)


def describe_fusion(
    net: FusionNet, statistics: StatisticsConfig, calibration: Calibration, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a checkpoint records about a learned rule (plain types only)."""
    return {
        "statistics": statistics.to_dict(),
        "net": dict(net.config),
        "calibration": calibration.to_dict(),
        **(extra or {}),
    }


class LearnedFusion(RefinementRule):
    """The learned rule: per masklet, the action its :class:`FusionNet` scores highest.

    Args:
        checkpoint: a checkpoint of :class:`vssam2.fusion.model.FusionModel` (``train.py``).
        name: row suffix.
        net: a network to use directly instead of a checkpoint (with ``statistics``).
        statistics: the statistics ``net`` was trained on.
        calibration: when the network overrides its fallback (with ``net``; a checkpoint
            carries its own).
        methods: the base methods it refines; default the one it was trained on (recorded in
            the checkpoint), or every method when that is unknown. A rule learns its base
            model's errors, so applying it to another model is a choice to make explicitly.

    Raises:
        DataError: the checkpoint is missing, unreadable, not a fusion rule, or trained on
            another statistics version or feature set (naming the file and the field).
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        name: str = "learned",
        net: FusionNet | None = None,
        statistics: StatisticsConfig | None = None,
        calibration: Calibration | None = None,
        methods: list[str] | None = None,
    ) -> None:
        self.name = name
        self.checkpoint = checkpoint
        self.trained_on: dict[str, Any] = {}
        if net is not None:
            if statistics is None:
                raise ValueError("LearnedFusion(net=...) needs the statistics it was trained on")
            self.net, self.statistics = net, statistics
            self.calibration = calibration or Calibration()
        elif checkpoint is not None:
            self.net, self.statistics, self.calibration, self.trained_on = load_fusion_checkpoint(checkpoint)
        else:
            raise ValueError(
                "LearnedFusion needs a checkpoint (train one with train.py and a configs/train/fusion_* config)"
            )
        trained = self.trained_on.get("base_method")
        self.methods = list(methods) if methods is not None else ([trained] if trained else None)

    def applies_to(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    def decide(self, inputs: RuleInputs) -> torch.Tensor:
        if inputs.num_classes != self.statistics.num_classes:
            raise ValueError(
                f"learned rule {self.checkpoint or self.name!r} was trained for {self.statistics.num_classes} classes, "
                f"this run scores {inputs.num_classes}"
            )
        table = inputs.require_table(f"LearnedFusion ({self.name})", [])
        soft = (
            inputs.soft_votes(f"LearnedFusion ({self.name}), trained with use_probs")
            if self.statistics.use_probs
            else None
        )
        stats = masklet_statistics(inputs.counts, self.statistics, inputs.frames, inputs.start, table, soft)
        paint = torch.full((inputs.counts.row_ids.shape[0],), -1, dtype=torch.int16)
        if stats.rows.numel():
            if self.net.training:  # a FusionModel's net between epochs
                self.net.eval()
            device = self.net.mean.device
            with torch.inference_mode():
                logits = self.net(stats.features.to(device), stats.candidates.to(device)).cpu()
            actions = calibrated_actions(logits, stats.candidates, self.calibration)
            paint[stats.rows] = actions_to_paint(actions, stats.candidates).to(torch.int16)
        return paint

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "checkpoint": self.checkpoint,
            "methods": self.methods,
            "statistics": self.statistics.to_dict(),
            "calibration": self.calibration.to_dict(),
            "trained_on": self.trained_on,
        }


def load_fusion_checkpoint(path: str | Path) -> tuple[FusionNet, StatisticsConfig, Calibration, dict[str, Any]]:
    """The network, statistics, calibration and provenance of a learned rule's checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"learned refinement rule: checkpoint {path} not found", path)
    try:
        # A Lightning checkpoint of the user's own run (hyper-parameters are pickled objects).
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise DataError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})", path) from error
    info = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(info, dict) or "statistics" not in info or "net" not in info:
        raise DataError(
            f"{path}: not a learned refinement rule (no {CHECKPOINT_KEY!r} entry): train one with "
            "`python train.py --config configs/train/fusion_*.yaml`",
            path,
        )
    statistics = StatisticsConfig.from_dict(info["statistics"])
    if statistics.version != STATS_VERSION:
        raise DataError(
            f"{path}: field statistics.version is {statistics.version}, this vssam2 computes statistics version "
            f"{STATS_VERSION}: retrain the rule on a statistics cache built by this version",
            path,
        )
    expected = feature_names(statistics.use_probs)
    if tuple(statistics.features) != expected:
        raise DataError(
            f"{path}: field statistics.features {list(statistics.features)} differs from this version's "
            f"{list(expected)}: retrain the rule",
            path,
        )
    net = FusionNet(**info["net"])
    state = {k[len("net.") :]: v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise DataError(f"{path}: the rule's weights do not fit its recorded network ({error})", path) from error
    net.eval()
    calibration = Calibration(**info.get("calibration", {}))
    provenance = {k: v for k, v in info.items() if k not in ("statistics", "net", "calibration")}
    return net, statistics, calibration, provenance
