"""SegFormer's Mix Transformer (MiT-B0...B5) as a frozen encoder, from mmseg / NVlabs checkpoints.

The paper's I-CFFM classifies masklets with the MiT encoder of a trained VSS model (CFFM,
MRCFA and TV3S all use MiT backbones). Their released checkpoints are mmsegmentation-0.x
files: ``{"state_dict": {...}, "meta": {...}}`` with ``backbone.*`` keys in the naming of
NVlabs' ``mix_transformer.py`` plus the segmentation head's ``decode_head.*``. The network
here is transformers' ``SegformerModel`` (5.x module layout); :func:`mmseg_to_hf` maps the
keys. NVlabs' ImageNet-pretrained ``mit_b*.pth`` files (the same keys without
``backbone.``, plus a ``head.*`` classifier) load too.

The features of a VSS model's encoder are only those the model computed if the frame is
prepared as its test pipeline prepares it: for CFFM / MRCFA / TV3S on VSPW that is mmseg's
``AlignedResize`` (see :mod:`vssam2.encoders.mmseg_resize`), which a segmentor checkpoint
gets by default (``resize="auto"``), and mmcv's normalisation (:func:`mmcv_normalise_lut`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import numpy as np
import torch

from vssam2.encoders.base import (
    FrozenEncoder,
    check_size,
    checkpoint_sha256,
    load_torch_file,
    seeded,
    state_dict_mismatch,
)
from vssam2.encoders.mmseg_resize import (
    VSPW_IMG_SCALE,
    VSPW_SIZE_DIVISOR,
    cv2_linear_resize,
    mmseg_aligned_resize,
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


#: How :class:`MiTEncoder` resizes a frame; see its ``resize`` argument.
MiTResize = Literal["auto", "mmseg_aligned", "keep", "stretch"]
#: What a MiT checkpoint holds: an mmseg segmentor (``backbone.*`` keys), NVlabs' ImageNet
#: backbone (bare keys), or nothing (seeded random initialisation).
MiTWeightsKind = Literal["mmseg_segmentor", "nvlabs_imagenet", "random"]

#: mmseg's ``img_norm_cfg`` of CFFM / MRCFA / TV3S / SegFormer, RGB on 0..255 (the ImageNet
#: mean / std of ``vssam2.encoders.base`` times 255).
MMSEG_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
MMSEG_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


def mmcv_normalise_lut(
    mean: tuple[float, float, float] = MMSEG_MEAN, std: tuple[float, float, float] = MMSEG_STD
) -> torch.Tensor:
    """mmcv's ``imnormalize`` of every uint8 value, per channel: a ``(3, 256)`` float32 table.

    mmseg's ``Normalize`` keeps mean / std as float32 arrays; mmcv 1.3's ``imnormalize_``
    then widens them to float64 and, on the float32 image, runs ``cv2.subtract(img, mean,
    img)`` and ``cv2.multiply(img, 1 / std, img)``, each result rounded to float32. A uint8
    input has 256 values per channel, so a table holds the exact results.

    Args:
        mean: RGB mean on 0..255.
        std: RGB standard deviation on 0..255.

    Returns:
        ``(3, 256)`` float32: ``table[c, v]`` is the normalised value ``v`` of channel ``c``.
    """
    mean64 = np.asarray(mean, dtype=np.float32).astype(np.float64)[:, None]  # (3, 1)
    inv_std64 = 1.0 / np.asarray(std, dtype=np.float32).astype(np.float64)[:, None]
    values = np.arange(256, dtype=np.float64)[None, :]  # (1, 256)
    centred = (values - mean64).astype(np.float32)  # cv2.subtract writes the float32 image
    return torch.from_numpy((centred.astype(np.float64) * inv_std64).astype(np.float32))


class MiTEncoder(FrozenEncoder):
    """SegFormer's Mix Transformer (MiT-B0...B5) encoder; features are one stage's output.

    Preprocessing follows mmseg bit for bit (the input a VSS model's backbone saw):

    - **Resize** (``resize``), on the uint8 frame with OpenCV's ``INTER_LINEAR`` rounding,
      bit-exact (:func:`~vssam2.encoders.mmseg_resize.cv2_linear_resize`):

      * ``"mmseg_aligned"``: CFFM / MRCFA / TV3S's test-time ``AlignedResize(keep_ratio=True,
        size_divisor=32)`` at ``img_scale=(853, 480)``: scaled to fit 853 x 480 (long x short
        edge) keeping the aspect ratio, then each side stretched up to a multiple of
        ``size_divisor``. 480x853 -> 480x864, 720x1280 -> 480x864, 480x1138 -> 384x864.
      * ``"keep"``: the frame's own size (MiT accepts any size).
      * ``"stretch"``: to ``input_size`` (mmcv's ``imresize``, the ratio not kept).
      * ``"auto"`` (default): ``"stretch"`` if ``input_size`` is set, else
        ``"mmseg_aligned"`` for an mmseg segmentor checkpoint (the features the VSS model
        computed), else ``"keep"`` (NVlabs' ImageNet weights, random weights).

    - **Normalisation**: mmcv's ``imnormalize`` with mean 123.675, 116.28, 103.53 and std
      58.395, 57.12, 57.375 on 0..255 (the ImageNet constants x 255), float32 as mmcv rounds it
      (:func:`mmcv_normalise_lut`). No padding: the aligned size is already a multiple of 32.

    The features are on the grid of the resized frame: ``ceil`` of its size over the stride
    (480x864 -> 15x27 at stride 32). Masked-average pooling upsamples them to the segment
    map's ``(H, W)`` (``align_corners=False``), and every mode resizes each axis uniformly,
    so a cell lands on the part of the original frame it was computed from.

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
            SegFormer releases; ``{"state_dict": ..., "meta": ...}`` or a bare state dict
            with ``backbone.*`` keys) or NVlabs' ImageNet ``mit_b*.pth``; see
            :func:`mmseg_to_hf`. None keeps a random initialisation seeded with ``seed``.
        level: Stage index 0..3 (negative counts from the end).
        resize: ``"auto"``, ``"mmseg_aligned"``, ``"keep"`` or ``"stretch"``, see above.
        input_size: ``(H, W)`` for ``"stretch"`` (and only for it).
        img_scale: mmcv's ``img_scale`` of ``"mmseg_aligned"`` (long and short edge
            limits); None means CFFM's VSPW ``(853, 480)``. SegFormer's ADE20K models test
            at ``(2048, 512)``, its Cityscapes models at ``(2048, 1024)``.
        size_divisor: ``"mmseg_aligned"``'s divisor; None means 32.
        seed: Seed of the random initialisation when ``checkpoint`` is None.
        autocast: bf16 autocast for CUDA input (the output is float32 either way).

    Attributes:
        resize: The mode in use (``"auto"`` resolved).
        weights_kind: ``"mmseg_segmentor"``, ``"nvlabs_imagenet"`` or ``"random"``.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: Unknown variant, unreadable file, weights of another variant or model
            (missing, unexpected or shape-mismatched keys, listed), ``level`` out of range,
            an unknown ``resize``, or sizes that do not fit it (``input_size`` without
            ``"stretch"`` or missing for it, ``img_scale`` / ``size_divisor`` without
            ``"mmseg_aligned"``, non-positive values).
    """

    def __init__(
        self,
        variant: str = "b0",
        checkpoint: str | None = None,
        level: int = -1,
        resize: MiTResize = "auto",
        input_size: tuple[int, int] | None = None,
        img_scale: tuple[int, int] | None = None,
        size_divisor: int | None = None,
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
        self.weights_kind: MiTWeightsKind = _weights_kind(state)
        self.resize: MiTResize = _resolve_resize(resize, self.input_size, self.weights_kind)
        self.img_scale: tuple[int, int] | None = None
        self.size_divisor: int | None = None
        if self.resize == "mmseg_aligned":
            self.img_scale = _check_img_scale(img_scale if img_scale is not None else VSPW_IMG_SCALE)
            self.size_divisor = _check_divisor(size_divisor if size_divisor is not None else VSPW_SIZE_DIVISOR)
        elif img_scale is not None or size_divisor is not None:
            raise ValueError(
                f"img_scale / size_divisor are options of resize='mmseg_aligned', but resize is {self.resize!r}"
            )

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
        self.register_buffer("norm_table", mmcv_normalise_lut(), persistent=False)  # (3, 256)
        self.register_buffer(
            "_table_offsets", torch.arange(3, dtype=torch.int64).view(1, 3, 1, 1) * 256, persistent=False
        )
        self._freeze()

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, 3, h, w)`` float32: mmseg's resize, then mmcv's normalisation."""
        images = frames.permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
        if self.resize == "mmseg_aligned":
            images = mmseg_aligned_resize(images, self.img_scale, self.size_divisor)  # (B, 3, h, w) uint8
        elif self.resize == "stretch":
            images = cv2_linear_resize(images, self.input_size)  # (B, 3, h, w) uint8
        return torch.take(self.norm_table, images.long() + self._table_offsets)  # (B, 3, h, w) float32

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
        """Variant, level, resize mode and its sizes, weights."""
        identity: dict[str, Any] = {
            "variant": self.variant,
            "level": self.level,
            "resize": self.resize,
            "input_size": list(self.input_size) if self.input_size is not None else None,
        }
        if self.resize == "mmseg_aligned":
            identity["img_scale"] = list(self.img_scale)
            identity["size_divisor"] = self.size_divisor
        if self._sha256 is not None:
            identity["checkpoint_sha256"] = self._sha256
        else:
            identity["seed"] = self._seed
        return identity


def _weights_kind(state: Mapping[str, torch.Tensor] | None) -> MiTWeightsKind:
    """Which kind of file a MiT state dict came from (None: no file)."""
    if state is None:
        return "random"
    if any(key.startswith(_BACKBONE_PREFIX) for key in state):
        return "mmseg_segmentor"
    return "nvlabs_imagenet"


def _resolve_resize(resize: str, input_size: tuple[int, int] | None, kind: MiTWeightsKind) -> MiTResize:
    """``resize`` with ``"auto"`` replaced by its choice; checks ``input_size`` fits the mode."""
    modes = get_args(MiTResize)
    if resize not in modes:
        raise ValueError(f"Unknown MiT resize {resize!r}; use one of {list(modes)}")
    if resize == "auto":
        if input_size is not None:
            return "stretch"
        return "mmseg_aligned" if kind == "mmseg_segmentor" else "keep"
    if resize == "stretch" and input_size is None:
        raise ValueError("resize='stretch' needs input_size (H, W)")
    if resize != "stretch" and input_size is not None:
        raise ValueError(f"input_size {list(input_size)} is only used by resize='stretch', not {resize!r}")
    return cast(MiTResize, resize)


def _check_img_scale(img_scale: tuple[int, int]) -> tuple[int, int]:
    """Validates mmcv's ``img_scale``: two positive ints (YAML gives a list)."""
    if len(img_scale) != 2 or any(int(v) != v or v <= 0 for v in img_scale):
        raise ValueError(f"img_scale must be (long edge, short edge) with positive ints, got {img_scale!r}")
    return int(img_scale[0]), int(img_scale[1])


def _check_divisor(size_divisor: int) -> int:
    """Validates ``size_divisor``: a positive int."""
    if int(size_divisor) != size_divisor or size_divisor <= 0:
        raise ValueError(f"size_divisor must be a positive int, got {size_divisor!r}")
    return int(size_divisor)


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
    depths = tuple(len({k.split(".")[3] for k in mapped if k.startswith(f"stages.{i}.blocks.")}) for i in range(4))
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
