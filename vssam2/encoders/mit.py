"""SegFormer's Mix Transformer (MiT-B0...B5) as a frozen encoder, from mmseg / NVlabs checkpoints.

The paper's I-CFFM classifies masklets with the MiT encoder of a trained VSS model (CFFM,
MRCFA and TV3S all use MiT backbones). Their released checkpoints are mmsegmentation-0.x
files: ``{"state_dict": {...}, "meta": {...}}`` with ``backbone.*`` keys in the naming of
NVlabs' ``mix_transformer.py`` plus the segmentation head's ``decode_head.*``. The network
here is transformers' ``SegformerModel`` (5.x module layout); :func:`mmseg_to_hf` maps the
keys. NVlabs' ImageNet-pretrained ``mit_b*.pth`` files (the same keys without
``backbone.``, plus a ``head.*`` classifier) load too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vssam2.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrozenEncoder,
    as_channel_buffer,
    checkpoint_sha256,
    check_size,
    load_torch_file,
    seeded,
    state_dict_mismatch,
)

if TYPE_CHECKING:  # transformers is imported when an encoder is built (its import takes ~2 s)
    from transformers import SegformerConfig, SegformerModel


@dataclass(frozen=True)
class MiTVariant:
    """Architecture of one MiT size (NVlabs ``mit_b0`` ... ``mit_b5``)."""

    hidden_sizes: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]


_WIDE = (64, 128, 320, 512)
#: The six MiT sizes. Shared by all: heads (1, 2, 5, 8), sequence-reduction ratios
#: (8, 4, 2, 1), MLP ratio 4, patch sizes (7, 3, 3, 3), strides (4, 2, 2, 2).
MIT_VARIANTS: dict[str, MiTVariant] = {
    "b0": MiTVariant((32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": MiTVariant(_WIDE, (2, 2, 2, 2)),
    "b2": MiTVariant(_WIDE, (3, 4, 6, 3)),
    "b3": MiTVariant(_WIDE, (3, 4, 18, 3)),
    "b4": MiTVariant(_WIDE, (3, 8, 27, 3)),
    "b5": MiTVariant(_WIDE, (3, 6, 40, 3)),
}

# NVlabs' MiT builds the blocks' norm1/norm2 and the stage norms norm1..norm4 with
# partial(nn.LayerNorm, eps=1e-6), but the patch-embedding norm and the attention's
# sequence-reduction norm with nn.LayerNorm's default 1e-5. transformers' SegformerModel
# uses 1e-5 everywhere (config.layer_norm_eps is not read by the encoder), so the 1e-6
# places are set after building.
_BLOCK_AND_STAGE_NORM_EPS = 1e-6

# Prefixes that are not the backbone: mmseg segmentors' heads, and the ImageNet classifier
# of NVlabs' mit_b*.pth files. Dropped by mmseg_to_hf; anything else unknown is kept (and
# then reported as unexpected).
_IGNORED_PREFIXES: tuple[str, ...] = ("decode_head.", "auxiliary_head.", "head.")
_BACKBONE_PREFIX = "backbone."

# NVlabs key -> transformers 5.x key. Stage i (1-based in NVlabs' names, 0-based in HF's).
_PATCH_EMBED = re.compile(r"^patch_embed([1-4])\.(proj|norm)\.(weight|bias)$")
_STAGE_NORM = re.compile(r"^norm([1-4])\.(weight|bias)$")
_BLOCK = re.compile(r"^block([1-4])\.(\d+)\.(.+)\.(weight|bias)$")
_PATCH_EMBED_PARTS: dict[str, str] = {"proj": "proj", "norm": "layer_norm"}
# Inside a block; attn.kv is not here: it splits into k_proj and v_proj.
_BLOCK_PARTS: dict[str, str] = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.q": "attention.q_proj",
    "attn.proj": "attention.o_proj",
    "attn.sr": "attention.sequence_reduction.sequence_reduction",
    "attn.norm": "attention.sequence_reduction.layer_norm",
    "mlp.fc1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
    "mlp.fc2": "mlp.fc2",
}


def mmseg_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Maps an NVlabs / mmseg-0.x MiT state dict to transformers 5.x ``SegformerModel`` keys.

    Accepts a segmentor's state dict (``backbone.*`` plus ``decode_head.*`` /
    ``auxiliary_head.*``, which are dropped) or a bare MiT one (NVlabs' ImageNet
    ``mit_b*.pth``: no prefix, ``head.*`` classifier dropped). The mapping:

    ========================================  ===================================================
    NVlabs (stage i = 1..4, block j)           transformers 5.x (stage i-1)
    ========================================  ===================================================
    ``patch_embed{i}.proj``                    ``stages.{i-1}.patch_embeddings.proj``
    ``patch_embed{i}.norm``                    ``stages.{i-1}.patch_embeddings.layer_norm``
    ``block{i}.{j}.norm1`` / ``norm2``         ``stages.{i-1}.blocks.{j}.layernorm_before`` / ``_after``
    ``block{i}.{j}.attn.q``                    ``...blocks.{j}.attention.q_proj``
    ``block{i}.{j}.attn.kv`` (2C outputs)      rows ``[:C]`` -> ``attention.k_proj``, ``[C:]`` -> ``v_proj``
    ``block{i}.{j}.attn.proj``                 ``...attention.o_proj``
    ``block{i}.{j}.attn.sr`` / ``attn.norm``   ``...attention.sequence_reduction.sequence_reduction`` / ``.layer_norm``
    ``block{i}.{j}.mlp.fc1|dwconv.dwconv|fc2`` ``...blocks.{j}.mlp.fc1|dwconv.dwconv|fc2``
    ``norm{i}``                                ``stages.{i-1}.layer_norm``
    ========================================  ===================================================

    The ``kv`` split follows NVlabs' forward, ``kv(x).reshape(B, N, 2, heads, C // heads)``:
    the first C outputs are the keys, the last C the values, heads contiguous in each.

    Keys that fit none of these patterns are returned unchanged, so that a strict load
    reports them as unexpected instead of silently ignoring a wrong file.

    Args:
        state_dict: The checkpoint's state dict (``torch.load(f)["state_dict"]``).

    Returns:
        A new dict; tensors are shared with the input except the ``kv`` halves (views).
    """
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(_BACKBONE_PREFIX):
            key = key[len(_BACKBONE_PREFIX) :]
        elif key.startswith(_IGNORED_PREFIXES):
            continue
        for new_key, new_value in _map_mit_key(key, value):
            mapped[new_key] = new_value
    return mapped


def _map_mit_key(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """One NVlabs backbone key (no ``backbone.`` prefix) -> its transformers key(s)."""
    if m := _PATCH_EMBED.match(key):
        stage, part, kind = int(m.group(1)) - 1, m.group(2), m.group(3)
        return [(f"stages.{stage}.patch_embeddings.{_PATCH_EMBED_PARTS[part]}.{kind}", value)]
    if m := _STAGE_NORM.match(key):
        stage, kind = int(m.group(1)) - 1, m.group(2)
        return [(f"stages.{stage}.layer_norm.{kind}", value)]
    if m := _BLOCK.match(key):
        stage, block, part, kind = int(m.group(1)) - 1, int(m.group(2)), m.group(3), m.group(4)
        prefix = f"stages.{stage}.blocks.{block}"
        if part == "attn.kv" and value.shape[0] % 2 == 0:
            half = value.shape[0] // 2  # (2C, C) weight or (2C,) bias: keys first, then values
            return [
                (f"{prefix}.attention.k_proj.{kind}", value[:half]),
                (f"{prefix}.attention.v_proj.{kind}", value[half:]),
            ]
        if part in _BLOCK_PARTS:
            return [(f"{prefix}.{_BLOCK_PARTS[part]}.{kind}", value)]
    return [(key, value)]  # unknown: kept so that the strict check lists it


class MiTEncoder(FrozenEncoder):
    """SegFormer's Mix Transformer (MiT-B0...B5) encoder; features are one stage's output.

    Preprocessing is mmseg's test pipeline: RGB normalised with the ImageNet mean / std
    (mmseg's 123.675, 116.28, 103.53 / 58.395, 57.12, 57.375 on 0..255), resized only if
    ``input_size`` is set, bilinearly *without* antialiasing (mmseg resizes with OpenCV's
    ``INTER_LINEAR``, which does not low-pass filter), so the features are those the VSS
    model computed. VSPW frames are 480p, the size CFFM / MRCFA / TV3S test at, so the
    default keeps the frame's size. MiT accepts any size.

    Levels: stage outputs 0..3 at strides 4, 8, 16, 32 with ``hidden_sizes[level]``
    channels (B0: 32, 64, 160, 256; B1-B5: 64, 128, 320, 512). The default, level -1
    (stage 4, stride 32), is the most semantic stage (the one ImageNet classification and
    the deepest part of SegFormer's decoder read): masklet classification needs the
    class of a region more than its boundary, which the masklet itself supplies, and
    masked-average pooling over a masklet averages away fine detail anyway. Level 2
    (stride 16) matches the resolution of SAM2's default features and suits very small
    masklets better.

    Only the stages up to ``level`` are kept: lower levels cost less memory and compute.

    Args:
        variant: ``"b0"`` ... ``"b5"`` (``"mit_b2"``, ``"MiT-B2"`` also accepted).
        checkpoint: Local weights: an mmseg-0.x segmentor checkpoint (CFFM, MRCFA, TV3S,
            SegFormer releases; ``{"state_dict": ..., "meta": ...}`` or a bare state dict)
            or NVlabs' ImageNet ``mit_b*.pth``; see :func:`mmseg_to_hf`. None keeps a random
            initialisation seeded with ``seed``.
        level: Stage index 0..3 (negative counts from the end).
        input_size: ``(H, W)`` to resize frames to; None keeps the frame's size.
        seed: Seed of the random initialisation when ``checkpoint`` is None.
        autocast: bf16 autocast for CUDA input (the output is float32 either way).

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: Unknown variant, unreadable file, weights of another variant or model
            (missing, unexpected or shape-mismatched keys, listed), ``level`` out of range,
            bad ``input_size``.
    """

    def __init__(
        self,
        variant: str = "b0",
        checkpoint: str | None = None,
        level: int = -1,
        input_size: tuple[int, int] | None = None,
        seed: int = 0,
        autocast: bool = True,
    ) -> None:
        super().__init__(autocast=autocast)
        self.variant = _normalise_variant(variant)
        spec = MIT_VARIANTS[self.variant]
        if not -4 <= level < 4:
            raise ValueError(f"level {level} out of range for MiT: stages 0..3 (or -1 for the last)")
        self.level: int = level % 4
        self.out_channels = spec.hidden_sizes[self.level]
        self.input_size: tuple[int, int] | None = check_size(input_size)
        self._seed = int(seed)
        # Read the checkpoint before building: a wrong path fails in milliseconds.
        path = Path(checkpoint).expanduser() if checkpoint is not None else None
        state = _read_mit_checkpoint(path) if path is not None else None
        self._sha256 = checkpoint_sha256(path) if path is not None else None

        from transformers import SegformerModel

        with seeded(self._seed):
            model = SegformerModel(_segformer_config(spec))
        for stage in model.stages:
            stage.layer_norm.eps = _BLOCK_AND_STAGE_NORM_EPS
            for block in stage.blocks:
                block.layernorm_before.eps = _BLOCK_AND_STAGE_NORM_EPS
                block.layernorm_after.eps = _BLOCK_AND_STAGE_NORM_EPS
        if state is not None:
            _load_strict(model, state, path, self.variant)
        # The stages are called directly (each maps (B, C, H, W) -> (B, C', H', W')):
        # SegformerModel.forward only loops over them, and calling them skips its output
        # recording machinery and the stages after `level`.
        self.stages = torch.nn.ModuleList(model.stages[: self.level + 1])
        del model
        self.register_buffer("mean", as_channel_buffer(IMAGENET_MEAN), persistent=False)
        self.register_buffer("std", as_channel_buffer(IMAGENET_STD), persistent=False)
        self._freeze()

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, 3, h, w)`` float32, mmseg's normalisation."""
        return self._resize_normalise(frames, self.input_size, self.mean, self.std, antialias=False)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, h, w)`` -> ``(B, hidden_sizes[level], ~h / stride, ~w / stride)``.

        Sizes round up at each stage (convolutions with padding): 48x64 gives 12x16,
        6x8, 3x4, 2x2.
        """
        hidden = images
        for stage in self.stages:
            hidden = stage(hidden)  # (B, hidden_sizes[i], h_i, w_i)
        return hidden

    def _identity(self) -> dict[str, Any]:
        """Variant, level, input size, weights."""
        identity: dict[str, Any] = {
            "variant": self.variant,
            "level": self.level,
            "input_size": list(self.input_size) if self.input_size is not None else None,
        }
        if self._sha256 is not None:
            identity["checkpoint_sha256"] = self._sha256
        else:
            identity["seed"] = self._seed
        return identity


def _normalise_variant(variant: str) -> str:
    """``"b2"``, ``"mit_b2"``, ``"MiT-B2"`` -> ``"b2"``."""
    key = variant.strip().lower().replace("-", "_")
    key = key.removeprefix("mit_").removeprefix("mit")
    if key not in MIT_VARIANTS:
        raise ValueError(f"Unknown MiT variant {variant!r}; use one of {sorted(MIT_VARIANTS)}")
    return key


def _segformer_config(spec: MiTVariant) -> SegformerConfig:
    """The transformers config of one MiT size (no dropout or drop-path: inference only)."""
    from transformers import SegformerConfig

    return SegformerConfig(
        num_channels=3,
        num_encoder_blocks=4,
        depths=list(spec.depths),
        hidden_sizes=list(spec.hidden_sizes),
        num_attention_heads=[1, 2, 5, 8],
        sr_ratios=[8, 4, 2, 1],
        mlp_ratios=[4, 4, 4, 4],
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        hidden_act="gelu",  # exact GELU, as NVlabs' nn.GELU
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
        layer_norm_eps=_BLOCK_AND_STAGE_NORM_EPS,  # documentation only, see above
        reshape_last_stage=True,
    )


def _read_mit_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Reads the state dict of an mmseg / NVlabs MiT checkpoint (nested or bare).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Unreadable, or holds no state dict.
    """
    obj = load_torch_file(path, "MiT checkpoint")
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"MiT checkpoint {path} holds no state dict (found {found}); expected mmseg's "
            "{'state_dict': ..., 'meta': ...} or a bare state dict"
        )
    return dict(obj)


def _guess_variant(mapped: Mapping[str, torch.Tensor]) -> str | None:
    """The MiT variant a mapped state dict belongs to (by width and depths), or None."""
    proj = mapped.get("stages.0.patch_embeddings.proj.weight")
    if proj is None:
        return None
    depths = tuple(
        len({k.split(".")[3] for k in mapped if k.startswith(f"stages.{i}.blocks.")}) for i in range(4)
    )
    for name, spec in MIT_VARIANTS.items():
        if spec.hidden_sizes[0] == proj.shape[0] and spec.depths == depths:
            return name
    return None


def _load_strict(model: SegformerModel, state: Mapping[str, torch.Tensor], path: Path, variant: str) -> None:
    """Maps and loads ``state`` strictly, or raises a ValueError listing the offending keys."""
    mapped = mmseg_to_hf(state)
    problem = state_dict_mismatch(model.state_dict(), mapped)
    if problem is not None:
        guess = _guess_variant(mapped)
        hint = f" It looks like MiT-{guess.upper()} weights." if guess and guess != variant else ""
        if not any(k.startswith("stages.") for k in mapped):
            hint = " It has no MiT backbone keys (backbone.patch_embed1... or patch_embed1...)."
        raise ValueError(
            f"MiT checkpoint {path} does not match MiT-{variant.upper()} (keys after mapping "
            f"to transformers' layout): {problem}.{hint}"
        )
    model.load_state_dict(mapped, strict=True)
