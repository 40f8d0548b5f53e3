"""Classification heads for pooled masklet vectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vssam2.labels import NUM_CLASSES


class MLPHead(nn.Module):
    """MLP that classifies a pooled masklet vector: LayerNorm, [Linear, GELU, Dropout]×k, Linear.

    The input LayerNorm puts encoders with very different feature scales (SAM2's neck, timm
    stages, MiT stages) on the same footing, so one learning rate works for all of them.

    Args:
        in_dim: dimension d of the pooled vectors (the encoder's channels).
        num_classes: number of output classes.
        hidden_dims: widths of the hidden layers (empty: a linear classifier).
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self, in_dim: int, num_classes: int = NUM_CLASSES, hidden_dims: Sequence[int] = (256,), dropout: float = 0.1
    ) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 1:
            raise ValueError(f"in_dim and num_classes must be >= 1, got {in_dim}, {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)]
        width = in_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.num_classes = num_classes

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """(N, d) pooled vectors → (N, num_classes) logits."""
        if vectors.dim() != 2 or vectors.shape[1] != self.in_dim:
            raise ValueError(f"expected (N, {self.in_dim}) vectors, got {tuple(vectors.shape)}")
        return self.layers(vectors)
