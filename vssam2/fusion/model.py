"""FusionModel: trains the learned refinement rule with ``train.py``, then tests it beside the vote.

Training reads the refinement statistics cache (``data.fusion_cache``): each batch is masklet
rows with the exact pixel gain of every action, and the loss is the expected regret of the
network's action distribution — Σ_a p(a) · (best gain − gain(a)), per pixel of the batch — so
the network is pushed towards the action that gains most pixels, and pays in proportion to
what a wrong action costs (a 10-pixel mistake matters less than a 10 000-pixel one).

Validation is exact and needs no pixel maps: each video's decisions become a confusion
matrix through the joint histograms (:func:`vssam2.fusion.gains.decision_confusion`) and
window scores through the window signatures (:func:`vssam2.fusion.consistency.window_scores`,
mVC_n of the cache's window), for the learned rule and, as references, for the base
prediction, the majority vote and the per-masklet best action (the upper bound of any rule
over these candidates, on mIoU).

Calibration (on held-out training videos) picks the fallback and margin that give the best
mIoU among those that keep mVC_n at least at the base's: the network is trained on pixel
gains, which cannot see temporal consistency, so the held-out videos guard it.

Testing streams the test split's clips with the masklet cache and scores the base
prediction, the vote and the learned rule through the one refine-and-score path (Table 1
shape: ``<model>``, ``SAM2-<model>``, ``SAM2-<model> (learned)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import MeanMetric

from vssam2.fusion.consistency import WindowSignatures, window_scores
from vssam2.fusion.dataset import GAIN_WEIGHTINGS, GainWeighting, joint_of
from vssam2.fusion.gains import action_gains, actions_to_paint, decision_confusion
from vssam2.fusion.learned import (
    CALIBRATION_MARGINS,
    CHECKPOINT_KEY,
    FALLBACKS,
    Calibration,
    FusionNet,
    LearnedFusion,
    calibrated_actions,
    describe_fusion,
)
from vssam2.fusion.rules import MajorityVote
from vssam2.fusion.statistics import StatisticsConfig
from vssam2.metrics import SemanticIoU
from vssam2.metrics.config import MetricConfig
from vssam2.metrics.functional import iou_from_confusion
from vssam2.replay import PredictionReplay
from vssam2.scoring import Refinement

#: Reference rows of the exact validation, besides the learned rule itself.
VALIDATION_REFERENCES: tuple[str, ...] = ("base", "vote", "upper")


def _pooled(window_lists: list[np.ndarray]) -> float:
    """mVC_n in points: the mean of every window score of every video (NaN windows skipped)."""
    scores = np.concatenate(window_lists) if window_lists else np.zeros(0)
    scores = scores[~np.isnan(scores)]
    return float(scores.mean()) * 100 if scores.size else float("nan")


class FusionModel(PredictionReplay):
    """The learned refinement rule of one base model (docs/refinement.md, "Learned fusion").

    Args:
        base_method: the base model it refines (a ``data.pred_roots`` name).
        name: the rule's row suffix (``SAM2-<model> (<name>)``).
        name_format: row name of the majority vote's refined rows.
        top_k: candidate classes per masklet (must match the statistics cache).
        use_probs: use the probability summaries (must match the statistics cache).
        hidden_dims: hidden widths of the MLP.
        class_embedding_dim: width of each candidate's class embedding.
        dropout: dropout of the MLP.
        vote_prior: initial logit of the vote's action (training starts from the vote).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        gain_weighting: what a correct pixel is worth in the loss: "pixels", or
            "inverse_frequency" (a pixel of class c weighs about what it moves mIoU by;
            :func:`vssam2.fusion.dataset.inverse_frequency_weights`).
        consistency_weight: weight of the first-order mVC_n gains in the loss (1 ≈ a point of
            mVC_n worth a point of mIoU; 0 = pixel gains only; 0.5 by default: enough to keep mVC8 where
            pixel gains alone lose it, without overriding the vote for steadiness that costs mIoU).
        calibration_min_gain: mIoU points an override must gain over the better pure fallback
            on the calibration videos (a smaller gain on a few videos is noise: the rule then
            stays the fallback the rest of the table is compared with).
        calibration_vc_tolerance: mVC_n points a calibration may lose against the base on the
            calibration videos.
        calibration_vote_preference: mIoU points by which keeping the base must beat the vote
            on the calibration videos to become the fallback (ties go to the vote).
        metrics: the metric configuration of every row (its class count is the rule's).
    """

    def __init__(
        self,
        base_method: str,
        name: str = "learned",
        name_format: str = "SAM2-{method}",
        top_k: int = 3,
        use_probs: bool = False,
        hidden_dims: Sequence[int] = (64, 64),
        class_embedding_dim: int = 4,
        dropout: float = 0.3,
        vote_prior: float = 2.0,
        lr: float = 3e-3,
        weight_decay: float = 1e-2,
        gain_weighting: GainWeighting = "inverse_frequency",
        consistency_weight: float = 0.5,
        calibration_min_gain: float = 0.5,
        calibration_vc_tolerance: float = 0.0,
        calibration_vote_preference: float = 0.1,
        metrics: MetricConfig = MetricConfig(),
    ) -> None:
        super().__init__([base_method], metrics)
        self.save_hyperparameters()
        if consistency_weight < 0:
            raise ValueError(f"consistency_weight must be ≥ 0, got {consistency_weight}")
        if gain_weighting not in GAIN_WEIGHTINGS:
            raise ValueError(f"gain_weighting must be one of {GAIN_WEIGHTINGS}, got {gain_weighting!r}")
        self.statistics = StatisticsConfig(metrics.num_classes, top_k, use_probs)
        self.net = FusionNet(
            len(self.statistics.features),
            metrics.num_classes,
            top_k,
            hidden_dims,
            class_embedding_dim,
            dropout,
            vote_prior,
        )
        self.calibration = Calibration()
        rows = ("learned", *VALIDATION_REFERENCES)
        self.val_iou = torch.nn.ModuleDict(
            {row: SemanticIoU(metrics.num_classes, metrics.ignore_index) for row in rows}
        )
        self.val_vc = torch.nn.ModuleDict({row: MeanMetric() for row in rows})  # pooled window scores
        self._vc_window: int | None = None  # the cache's consistency window
        self._trained_on: dict[str, Any] = {}
        self._calibration_data: list[dict[str, Any]] | None = None  # read on the first validation

    def rule(self) -> LearnedFusion:
        """The learned rule as it stands (shares this module's network)."""
        return LearnedFusion(
            name=self.hparams.name, net=self.net, statistics=self.statistics, calibration=self.calibration
        )

    # ------------------------------------------------------------------------ setup

    def setup(self, stage: str) -> None:
        """Checks the statistics cache against the rule; for testing, the vote and the rule."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        cache = getattr(datamodule, "fusion_cache", None)
        if cache is not None:
            cached = StatisticsConfig.from_dict(cache.config["statistics"])
            wrong = self.statistics.mismatch(cached)
            if wrong:
                raise ValueError(
                    f"statistics cache {cache.directory} does not match the model ({'; '.join(wrong)}): set "
                    "model.top_k / model.use_probs / metrics.num_classes as the cache was built, or rebuild it"
                )
            if cache.config["base_method"] != self.hparams.base_method:
                raise ValueError(
                    f"statistics cache {cache.directory} describes {cache.config['base_method']!r}, the model "
                    f"refines {self.hparams.base_method!r}"
                )
            self._trained_on = {
                "base_method": self.hparams.base_method,
                "masklets": cache.config["masklets"],
                "clip_len": cache.config["clip_len"],
                "statistics_cache": cache.directory.name,
            }
            self._vc_window = int(cache.config["consistency"]["window"])
        if stage == "test" and self.refinement is None:
            self.refinement = Refinement(rules=[MajorityVote(), self.rule()], name_format=self.hparams.name_format)
        super().setup(stage)

    def on_train_start(self) -> None:
        """Fits the feature standardisation on the training rows (a fresh fit only)."""
        if self.global_step == 0:
            dataset = self.trainer.train_dataloader.dataset
            features = getattr(dataset, "features", None)
            if features is None:
                raise TypeError("FusionModel trains from the statistics cache: give the data module a fusion_cache")
            self.net.set_normalization(features)

    # ------------------------------------------------------------------------- training

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if "gains" not in batch:
            raise KeyError("FusionModel trains from the statistics cache: give the data module a fusion_cache")
        logits = self.net(batch["features"], batch["candidates"])  # (B, 1 + k)
        key = "gains" if self.hparams.gain_weighting == "pixels" else "weighted_gains"
        gains = batch[key].to(logits.device)  # (B, 1 + k) float64, −inf = no action
        if self.hparams.consistency_weight:
            gains = gains + self.hparams.consistency_weight * batch["consistency_gains"].to(logits.device)
        valid = torch.isfinite(gains)
        regret = (gains.max(dim=1, keepdim=True).values - gains).masked_fill(~valid, 0.0)  # (B, 1 + k) ≥ 0
        p = torch.softmax(logits, dim=1)
        pixels = batch["area"].double().sum().clamp(min=1)
        loss = (p.double() * regret).sum() / pixels  # expected lost pixels per masklet pixel
        self.log("train/regret", loss.float() * 100, prog_bar=True, batch_size=int(gains.shape[0]))
        return loss.float()

    # ------------------------------------------------------------------- evaluation

    def on_validation_epoch_start(self) -> None:
        """Calibrates the rule on the held-out training videos before it is scored and saved."""
        datamodule = getattr(self.trainer, "datamodule", None)
        videos = list(getattr(datamodule, "fusion_calibration_videos", None) or [])
        if not videos:
            return
        cache, split = datamodule.fusion_cache, datamodule.train_split
        if self._calibration_data is None:
            self._calibration_data = [cache.read(split, video) for video in videos]
        num_classes, ignore = self.metric_config.num_classes, self.metric_config.ignore_index
        windows = self.metric_config.vc_windows
        choices = [Calibration(f, m) for f in FALLBACKS for m in CALIBRATION_MARGINS]
        confusion = [torch.zeros(num_classes, num_classes + 1, dtype=torch.int64) for _ in choices]
        window_lists: list[list[np.ndarray]] = [[] for _ in choices]
        base_windows: list[np.ndarray] = []
        was_training = self.net.training
        self.net.eval()
        with torch.no_grad():
            for arrays in self._calibration_data:
                joint = joint_of(arrays)
                signatures = WindowSignatures.from_arrays(arrays)
                candidates = torch.from_numpy(arrays["candidates"].astype("int64"))
                logits = self.net(torch.from_numpy(arrays["features"]).to(self.device), candidates.to(self.device))
                base_windows.append(window_scores(signatures, torch.full((len(candidates),), -1), windows))
                for k, choice in enumerate(choices):
                    paint = actions_to_paint(calibrated_actions(logits.cpu(), candidates, choice), candidates)
                    confusion[k] += decision_confusion(joint, paint, num_classes, ignore)
                    window_lists[k].append(window_scores(signatures, paint, windows))
        self.net.train(was_training)
        scores = [float(iou_from_confusion(c).nanmean()) * 100 for c in confusion]
        consistency = [_pooled(w) for w in window_lists]
        base_vc = _pooled(base_windows)
        # Only choices that keep mVC_n at the base's on the held-out videos (the pixel gains the
        # network learns from cannot see flicker); the base itself always qualifies. Among
        # them the pure fallback (margin inf) first; then an override of THAT fallback replaces
        # it only if it gains at least calibration_min_gain points: a gain within the noise of
        # a few videos does not justify leaving the rule the rest of the table is compared with.
        allowed = [
            k
            for k, choice in enumerate(choices)
            if not consistency[k] < base_vc - self.hparams.calibration_vc_tolerance
            or (choice.fallback == "base" and choice.margin == float("inf"))
        ]
        pure = {choices[k].fallback: k for k in allowed if choices[k].margin == float("inf")}
        best = pure["base"]
        # Ties go to the vote, the paper's rule (its mBIoU, which histograms cannot score, is
        # often far better where the two draw on mIoU).
        if "vote" in pure and scores[pure["vote"]] >= scores[best] - self.hparams.calibration_vote_preference:
            best = pure["vote"]
        fallback = choices[best].fallback
        overrides = [k for k in allowed if choices[k].fallback == fallback and choices[k].margin != float("inf")]
        if overrides:
            challenger = max(overrides, key=lambda k: (scores[k], choices[k].margin))
            if scores[challenger] >= scores[best] + self.hparams.calibration_min_gain:
                best = challenger
        self.calibration = choices[best]
        self.log("val/calibration/mIoU", scores[best])
        for fallback, k in pure.items():  # the pure fallbacks, what every choice is measured against
            self.log(f"val/calibration/{fallback}_mIoU", scores[k])
        self.log(f"val/calibration/mVC{self._vc_window}", consistency[best])
        self.log(f"val/calibration/base_mVC{self._vc_window}", base_vc)
        margin = choices[best].margin
        self.log("val/calibration/margin", margin if margin != float("inf") else -1.0)
        self.log("val/calibration/fallback_vote", float(choices[best].fallback == "vote"))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "joint_row" not in batch:  # a clip stream: score like testing
            self._score(batch)
            return
        joint = joint_of({k: batch[k].numpy() for k in ("joint_row", "joint_base", "joint_gt", "joint_count")})
        candidates = batch["candidates"]
        num_classes, ignore = self.metric_config.num_classes, self.metric_config.ignore_index
        num = candidates.shape[0]
        if num:
            logits = self.net(batch["features"].to(self.device), candidates.to(self.device)).cpu()
            learned = calibrated_actions(logits, candidates, self.calibration)
            gains = action_gains(joint, candidates, num_classes)
            decisions = {
                "learned": learned,
                "base": torch.zeros(num, dtype=torch.int64),
                "vote": (candidates[:, 0] >= 0).long(),  # candidate 1 is the vote's winner
                "upper": gains.argmax(dim=1),
            }
        else:
            decisions = {row: torch.zeros(0, dtype=torch.int64) for row in self.val_iou}
        signatures = WindowSignatures.from_arrays({k: batch[k].numpy() for k in WindowSignatures.ARRAYS})
        for row, actions in decisions.items():
            paint = actions_to_paint(actions, candidates)
            self.val_iou[row].update(confmat=decision_confusion(joint, paint, num_classes, ignore).to(self.device))
            scores = window_scores(signatures, paint, self.metric_config.vc_windows)
            scores = scores[~np.isnan(scores)]  # updated even when empty: every rank then syncs
            self.val_vc[row].update(torch.from_numpy(scores).float().to(self.device))

    def on_validation_epoch_end(self) -> None:
        if not self.val_iou["learned"].update_count:
            super().on_validation_epoch_end()
            return
        for row, metric in self.val_iou.items():
            scores = metric.compute()
            prefix = "val" if row == "learned" else f"val/{row}"
            self.log(f"{prefix}/mIoU", scores["mIoU"].float() * 100, prog_bar=row == "learned")
            self.log(f"{prefix}/WIoU", scores["WIoU"].float() * 100)
            metric.reset()
            if self.val_vc[row].update_count:
                self.log(f"{prefix}/mVC{self._vc_window}", self.val_vc[row].compute() * 100)
            self.val_vc[row].reset()
        self.report = None

    # ---------------------------------------------------------------- optimisation

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Records what :class:`LearnedFusion` needs to rebuild and check the rule."""
        checkpoint[CHECKPOINT_KEY] = describe_fusion(self.net, self.statistics, self.calibration, self._trained_on)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses a checkpoint of a rule with other statistics."""
        info = checkpoint.get(CHECKPOINT_KEY)
        if info is not None:
            wrong = self.statistics.mismatch(StatisticsConfig.from_dict(info["statistics"]))
            if wrong:
                raise ValueError(f"checkpoint was trained on other statistics: {'; '.join(wrong)}")
            self.calibration = Calibration(**info.get("calibration", {}))
