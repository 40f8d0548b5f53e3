"""Refinement rules: how a masklet's votes become "paint this class" or "keep the base".

Every rule decides from one chunk's :class:`RuleInputs` — the vote histogram the majority
vote counts (:func:`vssam2.refine.count_votes`), the masklets' score table, and optionally
the base model's class probabilities — and returns one paint id per histogram row (−1 = keep
the base prediction). Painting is shared (:meth:`vssam2.refine.VoteCounts.paint`), so a rule
costs one decision over K masklets on top of the vote's count and paint. Rules
(docs/refinement.md):

- :class:`MajorityVote`: Eq. 1–2, the paper's rule and the default.
- :class:`QualityGate`: the vote's winner, applied only to masklets whose statistics pass
  thresholds (vote share, margin, area, frames spanned, SAM2 predicted IoU and stability).
- :class:`ProbabilityVote`: the winner of summed class probabilities instead of pixel counts.
- :class:`LearnedFusion` (:mod:`vssam2.fusion.learned`): a small trained model choosing
  among keeping the base and painting one of the vote's top classes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vssam2.fusion.statistics import table_columns
from vssam2.masklets.base import MaskletTable
from vssam2.refine import VoteCounts, vote_decision

if TYPE_CHECKING:
    from vssam2.probabilities import TopKProbs


@dataclass
class RuleInputs:
    """What every rule may read about one chunk and one base prediction.

    Attributes:
        counts: the vote histogram of the chunk's masklets over the base prediction.
        num_classes: C.
        ignore_index: the "no prediction" id.
        frames: frames in the chunk.
        start: the chunk's first frame in the video.
        video: the video's name (for errors).
        table: the video's masklet score table, when known.
        table_origin: where the table came from (a file path or a source name), for errors.
        probs: the base model's top-k class probabilities of the chunk, when given.
    """

    counts: VoteCounts
    num_classes: int
    ignore_index: int
    frames: int
    start: int = 0
    video: str = "?"
    table: MaskletTable | None = None
    table_origin: str = "no score table"
    probs: TopKProbs | None = None
    _soft: torch.Tensor | None = field(default=None, repr=False)

    def require_table(self, rule: str, fields: list[str]) -> MaskletTable:
        """The score table, checked to hold values of ``fields`` for the chunk's masklets.

        Raises:
            ValueError: naming the rule, the table's origin and the missing field.
        """
        if self.table is None:
            raise ValueError(
                f"{rule} needs the masklets' score table ({', '.join(fields)}), but the chunk of video "
                f"{self.video!r} has none: give data.masklet_cache (its <video>/table.json) or a masklet source"
            )
        if not fields:
            return self.table
        present = self.counts.votes.sum(dim=1) > 0
        present[0] = False
        ids = self.counts.row_ids[present]
        iou, stability, first, _ = table_columns(self.table, ids)
        values = {"predicted_iou": iou, "stability": stability, "first_frame": first}
        for name in fields:
            column = values[name]
            missing = np.isnan(column) if column.dtype.kind == "f" else column < 0
            if missing.any():
                example = ids[torch.from_numpy(np.flatnonzero(missing)[:5])].tolist()
                raise ValueError(
                    f"{rule} needs the score-table field {name!r}, but {self.table_origin} has no {name} for "
                    f"{int(missing.sum())} masklets of video {self.video!r} (ids {example}); sources without "
                    "SAM2 scores (superpixels, oracle) leave predicted_iou and stability empty"
                )
        return self.table

    def soft_votes(self, rule: str) -> torch.Tensor:
        """(rows, C) float64 summed class probability per histogram row (computed once).

        Pixels count with the probability of each of their top-k classes; classes outside a
        pixel's top k count 0 there.
        """
        if self._soft is None:
            if self.probs is None:
                raise ValueError(
                    f"{rule} needs the base model's class probabilities, but the chunk of video {self.video!r} "
                    "has none for this method: give data.prob_roots {method: folder} (docs/probabilities.md) "
                    "or let the model return logits"
                )
            rows = self.counts.rows.cpu().numpy()  # (N,) int32 histogram row of each pixel
            if self.probs.classes[:, 0].numel() != rows.shape[0]:
                raise ValueError(
                    f"class probabilities of video {self.video!r} cover {self.probs.classes[:, 0].numel()} pixels, "
                    f"the chunk has {rows.shape[0]}"
                )
            # numpy's weighted bincount: about twice as fast as torch's here (benchmarks/README).
            code = rows.astype(np.int64) * self.num_classes  # (N,)
            bins = self.counts.row_ids.shape[0] * self.num_classes
            soft = np.zeros(bins, dtype=np.float64)
            for j in range(self.probs.k):
                classes = self.probs.classes[:, j].cpu().numpy().reshape(-1)  # (N,) uint8
                weights = self.probs.probs[:, j].cpu().numpy().reshape(-1)  # (N,) float16
                soft += np.bincount(code + classes, weights=weights, minlength=bins)
            soft = torch.from_numpy(soft)
            self._soft = soft.reshape(-1, self.num_classes)
        return self._soft


class RefinementRule(abc.ABC):
    """Decides, per masklet of a chunk, which class to paint (or to keep the base).

    Attributes:
        name: the rule's row suffix: ``SAM2-<model> (<name>)``; the majority vote's row has none.
    """

    name: str = "rule"

    @abc.abstractmethod
    def decide(self, inputs: RuleInputs) -> torch.Tensor:
        """(rows,) int16 class to paint over each histogram row's pixels, −1 = keep the base.

        Row 0 ("no masklet") must be −1.
        """

    def applies_to(self, method: str) -> bool:
        """Whether this rule refines ``method`` (a rule trained on one base model refines that one)."""
        return True

    def config(self) -> dict[str, Any]:
        """Every parameter that changes the refined map (saved with results)."""
        return {"rule": type(self).__name__, "name": self.name}

    def row_name(self, refined: str) -> str:
        """The row of this rule's refined map, given the refined row of the majority vote."""
        return refined if type(self) is MajorityVote and self.name == "vote" else f"{refined} ({self.name})"


class MajorityVote(RefinementRule):
    """Eq. 1–2: each masklet takes the class most of its base pixels have.

    Args:
        min_area: masklets with fewer pixels keep the base prediction.
        min_share: masklets whose winner has a smaller share of the voting pixels keep the
            base (0 = always apply, as in the paper).
        name: row suffix; "vote" (the default) gives the plain ``SAM2-<model>`` row.
    """

    def __init__(self, min_area: int = 0, min_share: float = 0.0, name: str = "vote") -> None:
        if min_area < 0 or not 0.0 <= min_share <= 1.0:
            raise ValueError(f"need min_area >= 0 and 0 <= min_share <= 1, got {min_area}, {min_share}")
        self.min_area = int(min_area)
        self.min_share = float(min_share)
        self.name = name

    def decide(self, inputs: RuleInputs) -> torch.Tensor:
        return vote_decision(inputs.counts.votes, inputs.num_classes, self.min_area, self.min_share)[0]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "min_area": self.min_area, "min_share": self.min_share}


class QualityGate(RefinementRule):
    """The vote's winner, applied only where the masklet's statistics pass every threshold.

    A threshold of 0 (or None for the score-table ones) is off. Score-table thresholds need
    a source that scores its masklets (SAM2): asking for them on superpixel or oracle masklets
    is an error naming the table, not a silent pass.

    Args:
        min_share: winner's share of the voting pixels.
        min_margin: winner's share minus the runner-up's.
        min_area: pixels in the chunk.
        min_frames: frames of the chunk the masklet spans (from the score table).
        min_predicted_iou: SAM2's predicted IoU of the masklet's proposal.
        min_stability: SAM2's stability score of the proposal.
        name: row suffix.
    """

    def __init__(
        self,
        min_share: float = 0.0,
        min_margin: float = 0.0,
        min_area: int = 0,
        min_frames: int = 0,
        min_predicted_iou: float | None = None,
        min_stability: float | None = None,
        name: str = "gate",
    ) -> None:
        for label, value in [("min_share", min_share), ("min_margin", min_margin)]:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"QualityGate: {label} must be in [0, 1], got {value}")
        if min_area < 0 or min_frames < 0:
            raise ValueError(f"QualityGate: need min_area >= 0 and min_frames >= 0, got {min_area}, {min_frames}")
        self.min_share = float(min_share)
        self.min_margin = float(min_margin)
        self.min_area = int(min_area)
        self.min_frames = int(min_frames)
        self.min_predicted_iou = None if min_predicted_iou is None else float(min_predicted_iou)
        self.min_stability = None if min_stability is None else float(min_stability)
        self.name = name

    def decide(self, inputs: RuleInputs) -> torch.Tensor:
        votes = inputs.counts.votes
        paint, _, share = vote_decision(votes, inputs.num_classes, self.min_area, self.min_share)
        keep = torch.zeros(paint.shape, dtype=torch.bool)
        if self.min_margin > 0:
            class_votes = votes[:, : inputs.num_classes]
            top2 = torch.topk(class_votes, min(2, inputs.num_classes), dim=1).values.double()
            voting = class_votes.sum(dim=1).double().clamp(min=1)
            second = top2[:, 1] if top2.shape[1] > 1 else torch.zeros_like(share)
            keep |= (top2[:, 0] - second) / voting < self.min_margin
        fields = [
            name
            for name, value in [("predicted_iou", self.min_predicted_iou), ("stability", self.min_stability)]
            if value is not None
        ] + (["first_frame"] if self.min_frames > 0 else [])
        if fields:
            table = inputs.require_table(f"QualityGate ({self.name})", fields)
            iou, stability, first, last = table_columns(table, inputs.counts.row_ids)
            if self.min_predicted_iou is not None:
                keep |= torch.from_numpy(~(iou >= self.min_predicted_iou))
            if self.min_stability is not None:
                keep |= torch.from_numpy(~(stability >= self.min_stability))
            if self.min_frames > 0:
                stop = inputs.start + inputs.frames - 1
                spanned = np.minimum(last, stop) - np.maximum(first, inputs.start) + 1
                keep |= torch.from_numpy(~(spanned >= self.min_frames))
        return torch.where(keep, torch.full_like(paint, -1), paint)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "min_share": self.min_share,
            "min_margin": self.min_margin,
            "min_area": self.min_area,
            "min_frames": self.min_frames,
            "min_predicted_iou": self.min_predicted_iou,
            "min_stability": self.min_stability,
        }


class ProbabilityVote(MajorityVote):
    """Each masklet takes the class with the largest summed probability over its pixels.

    Where the hard vote counts one vote per pixel for its arg-max class, this counts each
    pixel's probability of each of its top-k classes: an uncertain base pixel weighs less, and
    a runner-up class that the base is nearly sure of everywhere can win. The thresholds are
    the vote's.

    Args:
        min_area: masklets with fewer pixels keep the base prediction.
        min_share: masklets whose winner holds a smaller share of the summed probability keep
            the base.
        name: row suffix.
    """

    def __init__(self, min_area: int = 0, min_share: float = 0.0, name: str = "prob_vote") -> None:
        super().__init__(min_area, min_share, name)

    def decide(self, inputs: RuleInputs) -> torch.Tensor:
        soft = inputs.soft_votes(f"ProbabilityVote ({self.name})")  # (rows, C) float64
        best, winner = soft.max(dim=1)  # first maximum: ties → lowest class id
        total = soft.sum(dim=1)
        area = inputs.counts.votes.sum(dim=1)
        applied = (total > 0) & (area >= self.min_area) & (best >= self.min_share * total)
        applied[0] = False
        return torch.where(applied, winner, -1).to(torch.int16)
