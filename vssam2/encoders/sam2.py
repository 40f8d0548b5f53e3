"""SAM2's image encoder (Hiera trunk + FPN neck) as a frozen encoder: the paper's I-SAM2 features."""

from __future__ import annotations

from typing import Any

import torch

from vssam2.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrozenEncoder,
    as_channel_buffer,
    checkpoint_sha256,
    seeded,
)


class SAM2Encoder(FrozenEncoder):
    """SAM2's image encoder; features are one level of its FPN (``backbone_fpn``).

    Preprocessing is SAM2's own (``SAM2Transforms``): the frame is stretched to
    ``image_size x image_size`` (bilinear, antialiased), scaled to [0, 1] and normalised
    with the ImageNet mean / std. The feature grid is therefore square whatever the frame's
    aspect ratio: ``image_size / stride`` on each side.

    Levels (official configs, ``scalp=1``): 0 = stride 4, 1 = stride 8, 2 = stride 16;
    all have 256 channels. Level -1 (stride 16, 64x64 at 1024) is what SAM2 itself calls
    ``vision_features`` and feeds its mask decoder, so it is the default. Levels 0 and 1
    are the raw FPN outputs, before the ``conv_s0`` / ``conv_s1`` projections SAM2 applies
    for its decoder's high-resolution path.

    Args:
        config: SAM2 config name or alias (``"sam2.1_hiera_tiny"``, ``"sam2.1-large"``,
            ``"configs/sam2.1/sam2.1_hiera_b+.yaml"`` ...), or ``"vssam2-tiny-test"`` for a
            tiny random model (tests, demo). See ``vssam2.masklets.sam2_model``.
        checkpoint: Local official checkpoint (``{"model": state_dict}``, e.g.
            ``sam2.1_hiera_tiny.pt``); None keeps a random initialisation seeded with
            ``seed`` (tests and demos only: the features are meaningless).
        level: Index into the encoder's FPN levels (negative counts from the end).
        image_size: Input resolution (a multiple of 32); None keeps the config's (1024 for
            official configs, 128 for the tiny test config).
        overrides: Extra Hydra overrides for the config (``"++model.key=value"``).
        seed: Seed of the random initialisation when ``checkpoint`` is None.
        autocast: bf16 autocast for CUDA input (the output is float32 either way).

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: Unknown config, a checkpoint that does not match it, a bad
            ``image_size``, or ``level`` out of range.
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
    ) -> None:
        super().__init__(autocast=autocast)
        # Imported here: loading sam2 initialises Hydra and costs seconds; importing the
        # encoders package should not (the other encoders don't need it).
        from vssam2.masklets.sam2_model import load_sam2, resolve_config

        self._overrides = list(overrides or [])
        hydra_name, implied = resolve_config(config)
        self._config = hydra_name
        self._implied_overrides = list(implied)
        self._seed = int(seed)
        with seeded(self._seed):
            # load_sam2 checks the file (its FileNotFoundError lists Meta's URLs), the
            # config and every key before building.
            model = load_sam2(config, checkpoint, image_size=image_size, overrides=self._overrides)
        self._sha256 = checkpoint_sha256(checkpoint) if checkpoint is not None else None
        self.image_size: int = int(model.image_size)
        # Only the image encoder is needed: dropping the memory modules and the mask
        # decoder saves most of the non-trunk weights (e.g. ~6 of 6.2 M params in the tiny model).
        self.image_encoder: torch.nn.Module = model.image_encoder
        del model

        neck = self.image_encoder.neck
        # The neck makes one level per trunk stage; the image encoder drops the `scalp`
        # lowest-resolution ones.
        self.num_levels: int = len(neck.convs) - int(self.image_encoder.scalp)
        if not -self.num_levels <= level < self.num_levels:
            raise ValueError(
                f"level {level} out of range for SAM2 config {config!r}: it has "
                f"{self.num_levels} FPN levels (0..{self.num_levels - 1}, or -1 for the last)"
            )
        self.level: int = level % self.num_levels
        self.out_channels = int(neck.d_model)
        self.register_buffer("mean", as_channel_buffer(IMAGENET_MEAN), persistent=False)
        self.register_buffer("std", as_channel_buffer(IMAGENET_STD), persistent=False)
        self._freeze()

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, 3, image_size, image_size)`` float32, as SAM2 does it."""
        size = (self.image_size, self.image_size)
        images = self._resize_normalise(frames, size, self.mean, self.std, antialias=True)
        # Contiguous, as SAM2Transforms and the masklet sources give it: the permuted frames are
        # channels-last, and Hiera's patch embedding then convolves in another order (features
        # about 1e-6 apart, which would break the bit-identity of the one-pass feature cache).
        return images.contiguous()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``(B, 256, S / stride, S / stride)`` of the chosen FPN level."""
        return self.image_encoder(images)["backbone_fpn"][self.level]

    def _identity(self) -> dict[str, Any]:
        """Config (canonical name + all overrides), image size, level, weights."""
        identity: dict[str, Any] = {
            "config": self._config,
            "overrides": self._implied_overrides + self._overrides,
            "image_size": self.image_size,
            "level": self.level,
        }
        if self._sha256 is not None:
            identity["checkpoint_sha256"] = self._sha256
        else:
            identity["seed"] = self._seed
        return identity
