"""SAM2's image encoder with LoRA adapters on its Hiera trunk's attention (I-SAM2-LoRA).

The study finds SAM2's features class-agnostic (I-SAM2: 18.0 mIoU) and names low-rank
adaptation of SAM2's attention weights as the way to inject semantics while keeping the
encoder (and so its boundaries) close to SAM2's. :class:`SAM2LoRAEncoder` is
:class:`SAM2Encoder` (same preprocessing, same FPN level) with peft's LoRA layers injected
into the ``attn.qkv`` / ``attn.proj`` linears of chosen trunk blocks. Only the adapters are
trainable; the SAM2 weights stay frozen and are never written to a checkpoint.

Because the features change as the adapters train, the feature cache cannot serve this
encoder: training is online on clips (masklets from the masklet cache). To make that as
cheap as it can be:

- blocks before the first adapted one run without autograd (no input or weight needs a
  gradient, so torch records nothing there);
- with ``checkpointing`` every encoder call is wrapped in :func:`torch.utils.checkpoint`
  (non-reentrant): the clip's frames are encoded ``encoder_batch_size`` at a time and only
  the call whose backward runs holds activations, so a 32-frame clip at 1024 px needs the
  memory of one batch of frames, not 32, for one extra forward pass;
- on CUDA the trunk runs under bf16 autocast (as every encoder here), the adapters and the
  head in float32 weights.

At initialisation the adapters are the identity (peft zeroes ``lora_B``), so the features
equal :class:`SAM2Encoder`'s exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from vssam2.encoders.base import seeded
from vssam2.encoders.sam2 import SAM2Encoder

#: The attention linears of a Hiera block that adapters can target.
LoRATarget = Literal["qkv", "proj"]
LORA_TARGETS: tuple[str, ...] = ("qkv", "proj")


class SAM2LoRAEncoder(SAM2Encoder):
    """SAM2's image encoder with trainable low-rank adapters on the trunk's attention.

    Args:
        config: SAM2 config name (see :class:`SAM2Encoder`).
        checkpoint: Local official SAM2 checkpoint; None = seeded random weights (tests).
        level: FPN level of the features (see :class:`SAM2Encoder`).
        image_size: Input resolution; None keeps the config's.
        overrides: Extra Hydra overrides for the config.
        seed: Seed of the random SAM2 weights when ``checkpoint`` is None.
        autocast: bf16 autocast for CUDA input.
        rank: LoRA rank ``r``.
        alpha: LoRA ``alpha``; the update is scaled by ``alpha / rank``.
        dropout: Dropout on the adapters' input during training (peft's ``lora_dropout``).
        targets: Which attention linears get adapters: ``"qkv"`` (the fused query / key /
            value projection) and / or ``"proj"`` (the output projection).
        blocks: Trunk block indices that get adapters (negative counts from the end);
            None = every block. E.g. ``[-4, -3, -2, -1]`` adapts only the last four.
        adapter_seed: Seed of the adapters' initialisation (``lora_A``; ``lora_B`` is zero).
        checkpointing: Recompute each encoder call's activations in backward instead of
            keeping them (exact gradients, one extra forward pass, memory of one call).

    Raises:
        ValueError: A bad rank / alpha / dropout, an unknown target, or a block out of range.
    """

    def __init__(
        self,
        config: str = "sam2.1_hiera_tiny",
        checkpoint: str | None = None,
        level: int = -1,
        image_size: int | None = None,
        overrides: list[str] | None = None,
        seed: int = 0,
        autocast: bool = True,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        targets: Sequence[LoRATarget] = ("qkv", "proj"),
        blocks: Sequence[int] | None = None,
        adapter_seed: int = 0,
        checkpointing: bool = True,
    ) -> None:
        super().__init__(config, checkpoint, level, image_size, overrides, seed, autocast)
        from peft import LoraConfig, inject_adapter_in_model  # imported here: peft imports transformers

        if int(rank) != rank or rank < 1:
            raise ValueError(f"LoRA rank must be a positive int, got {rank!r}")
        if not alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {alpha!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
        unknown = [t for t in targets if t not in LORA_TARGETS]
        if unknown or not targets:
            raise ValueError(f"LoRA targets must be a non-empty subset of {list(LORA_TARGETS)}, got {list(targets)}")
        trunk = self.image_encoder.trunk
        num_blocks = len(trunk.blocks)
        chosen = range(num_blocks) if blocks is None else list(blocks)
        bad = [b for b in chosen if not -num_blocks <= int(b) < num_blocks]
        if bad or not chosen:
            raise ValueError(
                f"LoRA blocks {list(chosen)} out of range: the trunk of {config!r} has {num_blocks} blocks "
                f"(0..{num_blocks - 1}, negative from the end)"
            )
        self.rank, self.alpha, self.dropout = int(rank), float(alpha), float(dropout)
        self.targets: tuple[str, ...] = tuple(t for t in LORA_TARGETS if t in targets)
        self.blocks: tuple[int, ...] = tuple(sorted({int(b) % num_blocks for b in chosen}))
        self.adapter_seed = int(adapter_seed)
        self.checkpointing = bool(checkpointing)
        pattern = rf"blocks\.({'|'.join(map(str, self.blocks))})\.attn\.({'|'.join(self.targets)})"
        lora = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=pattern)
        with seeded(self.adapter_seed):
            inject_adapter_in_model(lora, trunk)
        adapted = [name for name, _ in trunk.named_modules() if re.fullmatch(pattern, name)]
        if len(adapted) != len(self.blocks) * len(self.targets):  # the trunk's layout is not what we target
            raise RuntimeError(f"LoRA matched {adapted} in the Hiera trunk for pattern {pattern!r}")
        for name, parameter in self.named_parameters():
            parameter.requires_grad_("lora_" in name)
        super().train(False)

    # -- what changes with trainable adapters ---------------------------------------------

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Features of ``(B, H, W, 3)`` uint8 frames; differentiable in the adapters when
        autograd is on (training), plain inference otherwise.

        Returns:
            ``(B, out_channels, h, w)`` float32 on the encoder's device.
        """
        if not torch.is_grad_enabled():
            return super().forward(frames)
        self._check_frames(frames)
        frames = frames.to(self._device())  # (B, H, W, 3) uint8
        if self.checkpointing:
            return activation_checkpoint(self._features, frames, use_reentrant=False)
        return self._features(frames)  # (B, 256, S / 16, S / 16)

    def train(self, mode: bool = True) -> SAM2LoRAEncoder:
        """SAM2 stays in eval mode; only the adapters' dropout follows ``mode``."""
        super().train(False)
        for name, module in self.named_modules():
            if name.endswith("lora_dropout") or ".lora_dropout." in name:
                module.train(mode)
        return self

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapters' weights (the only trainable tensors), keyed as in :meth:`state_dict`."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def base_identity(self) -> dict[str, Any]:
        """The identity of the frozen SAM2 encoder under the adapters (what
        :class:`SAM2Encoder` with the same arguments describes)."""
        return {"class": SAM2Encoder.__name__, "autocast": self.autocast, **super()._identity()}

    def _identity(self) -> dict[str, Any]:
        """The base SAM2 encoder's identity plus the adapters' configuration."""
        return {
            "base": self.base_identity(),
            "lora": {
                "rank": self.rank,
                "alpha": self.alpha,
                "dropout": self.dropout,
                "targets": list(self.targets),
                "blocks": list(self.blocks),
                "adapter_seed": self.adapter_seed,
            },
        }
