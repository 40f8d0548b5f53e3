"""The one metric configuration: every setting that changes a score, frozen, passed by name."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vssam2.labels import IGNORE_INDEX, NUM_CLASSES
from vssam2.metrics.boundary import BoundaryMode
from vssam2.metrics.functional import VCWindows


@dataclass(frozen=True)
class MetricConfig:
    """What the five metrics of the study depend on (docs/metrics.md pins each definition).

    Every scorer of the project (:class:`~vssam2.metrics.VSSMetrics`, the prediction replay,
    the refinement rows, the classifier's test, the ablations) takes one of these, so base and
    refined rows are always scored alike, and a run's saved config holds every value.

    Attributes:
        num_classes: number of classes C (evaluation ids 0…C−1).
        ignore_index: ignore id of the GT, "no prediction" id of a prediction.
        boundary_width: mBIoU boundary band half-width in pixels (chessboard distance).
        boundary_mode: "image" (Eq. 6, per image, mean over images) or "class" (IoU over band
            pixels, mean over classes).
        vc_lengths: window lengths n of the mVC_n metrics (named ``mVC<n>``).
        vc_windows: "scripts" (T − n windows per video, as the CFFM / MRCFA / TV3S scripts) or
            "paper" (T − n + 1, the printed formula).
    """

    num_classes: int = NUM_CLASSES
    ignore_index: int = IGNORE_INDEX
    boundary_width: int = 5
    boundary_mode: BoundaryMode = "image"
    vc_lengths: tuple[int, ...] = (8, 16)
    vc_windows: VCWindows = "scripts"

    def __post_init__(self) -> None:
        # Lists from YAML become tuples, so the config stays hashable and compares equal. The
        # metrics check the values themselves when they are built.
        object.__setattr__(self, "vc_lengths", tuple(int(n) for n in self.vc_lengths))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (for results files and W&B run configs)."""
        values = asdict(self)
        values["vc_lengths"] = list(self.vc_lengths)
        return values
