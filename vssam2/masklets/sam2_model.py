"""Loading SAM2 models (sam2 1.1.0) from local checkpoints, with clear errors.

Nothing here downloads anything. Official checkpoints have to be fetched by the user
beforehand (e.g. with ``wget``) and passed as a local path. Meta's URLs are:

SAM 2.1 (``configs/sam2.1/...``), released 2024-09-29:
    https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt
    https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt
    https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt
    https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt

SAM 2 (``configs/sam2/...``), released 2024-07-29:
    https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_tiny.pt
    https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_small.pt
    https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_base_plus.pt
    https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt

(The sam2 repository's ``checkpoints/download_ckpts.sh`` fetches the same files; the
Hugging Face repos ``facebook/sam2.1-hiera-tiny`` etc. hold copies.)

Config names: every official model config of sam2 1.1.0 is listed in
:data:`OFFICIAL_CONFIGS`; short aliases (``"sam2.1_hiera_t"``, ``"sam2.1-tiny"``,
``"facebook/sam2.1-hiera-base-plus"``, ``"sam2_hiera_large.pt"`` ...) resolve through
:func:`resolve_config`. The pseudo-config :data:`TINY_TEST_CONFIG` (``"vssam2-tiny-test"``)
is the official Hiera-T config shrunk with Hydra overrides (see
:data:`TINY_TEST_OVERRIDES`): a random-init model of a few MB for fast CPU tests. It needs no
YAML file of its own because sam2 resolves config names only inside the ``sam2`` package.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from sam2.modeling.sam2_base import SAM2Base
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2.sam2_video_predictor import SAM2VideoPredictor
from tqdm import tqdm

_URL_SAM2 = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
_URL_SAM21 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"

# Canonical config name -> official checkpoint file name.
_CONFIG_TO_CKPT: dict[str, str] = {
    "configs/sam2/sam2_hiera_t.yaml": "sam2_hiera_tiny.pt",
    "configs/sam2/sam2_hiera_s.yaml": "sam2_hiera_small.pt",
    "configs/sam2/sam2_hiera_b+.yaml": "sam2_hiera_base_plus.pt",
    "configs/sam2/sam2_hiera_l.yaml": "sam2_hiera_large.pt",
    "configs/sam2.1/sam2.1_hiera_t.yaml": "sam2.1_hiera_tiny.pt",
    "configs/sam2.1/sam2.1_hiera_s.yaml": "sam2.1_hiera_small.pt",
    "configs/sam2.1/sam2.1_hiera_b+.yaml": "sam2.1_hiera_base_plus.pt",
    "configs/sam2.1/sam2.1_hiera_l.yaml": "sam2.1_hiera_large.pt",
}

#: Canonical config name -> URL of Meta's matching checkpoint (documentation only).
CHECKPOINT_URLS: dict[str, str] = {
    cfg: (_URL_SAM21 if "sam2.1" in cfg else _URL_SAM2) + ckpt for cfg, ckpt in _CONFIG_TO_CKPT.items()
}

# Spellings of each size; the first entry is the one used in sam2's file names.
_SIZE_ALIASES: dict[str, tuple[str, ...]] = {
    "t": ("t", "tiny"),
    "s": ("s", "small"),
    "b+": ("b+", "base+", "base_plus", "baseplus", "bplus", "b", "base"),
    "l": ("l", "large"),
}


def _build_alias_table() -> dict[str, str]:
    """Maps every normalised alias to its canonical config name."""
    table: dict[str, str] = {}
    for version in ("sam2", "sam2.1"):
        for code, spellings in _SIZE_ALIASES.items():
            canonical = f"configs/{version}/{version}_hiera_{code}.yaml"
            table[_normalise(canonical)] = canonical
            for spelling in spellings:
                table[f"{version}_hiera_{spelling}"] = canonical
                table[f"{version}_{spelling}"] = canonical
    return table


def _normalise(name: str) -> str:
    """Lower-cases a config spelling and strips prefixes, suffixes and separators.

    ``"facebook/sam2.1-hiera-base-plus"``, ``"sam2.1_hiera_base_plus.pt"`` and
    ``"configs/sam2.1/sam2.1_hiera_b+.yaml"`` all normalise to an entry of the alias table.
    """
    n = name.strip().lower()
    n = n.rsplit("/", 1)[-1]  # drop "configs/sam2.1/" or "facebook/"
    n = re.sub(r"\.(ya?ml|pt|pth)$", "", n)
    return n.replace("-", "_").replace(" ", "_")


_ALIASES: dict[str, str] = _build_alias_table()

#: Every official model config of sam2 1.1.0 (canonical Hydra names inside the sam2
#: package), mapped to a short human name.
OFFICIAL_CONFIGS: dict[str, str] = {
    "configs/sam2/sam2_hiera_t.yaml": "sam2-tiny",
    "configs/sam2/sam2_hiera_s.yaml": "sam2-small",
    "configs/sam2/sam2_hiera_b+.yaml": "sam2-base+",
    "configs/sam2/sam2_hiera_l.yaml": "sam2-large",
    "configs/sam2.1/sam2.1_hiera_t.yaml": "sam2.1-tiny",
    "configs/sam2.1/sam2.1_hiera_s.yaml": "sam2.1-small",
    "configs/sam2.1/sam2.1_hiera_b+.yaml": "sam2.1-base+",
    "configs/sam2.1/sam2.1_hiera_l.yaml": "sam2.1-large",
}

#: Name of the tiny test model (not an official config: built from Hiera-T + overrides).
TINY_TEST_CONFIG = "vssam2-tiny-test"

#: Overrides that shrink ``sam2.1_hiera_t`` into a test model (~4 M parameters,
#: image_size 128). The trunk has stages [1, 1, 2, 1]: the q-pooling blocks are 1, 2 and 4
#: (the first block of stages 2-4); a global-attention block there divides the window size
#: 0 by the q stride (ZeroDivisionError), so the only global block is 3 (second block of
#: stage 3). The neck's channel list must mirror the trunk dims (embed_dim * 2**i).
TINY_TEST_OVERRIDES: tuple[str, ...] = (
    "++model.image_size=128",
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.dim_feedforward=256",
    "++model.memory_encoder.fuser.num_layers=1",
)

# Derived pseudo-configs: name -> (official base config, overrides).
_DERIVED_CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {
    TINY_TEST_CONFIG: ("configs/sam2.1/sam2.1_hiera_t.yaml", TINY_TEST_OVERRIDES),
}

# (trunk embed_dim, number of trunk blocks) -> size code, to guess a checkpoint's config.
_TRUNK_SIGNATURES: dict[tuple[int, int], str] = {
    (96, 12): "t",
    (96, 16): "s",
    (112, 24): "b+",
    (144, 48): "l",
}


def resolve_config(config: str) -> tuple[str, tuple[str, ...]]:
    """Resolves a config name or alias to a Hydra config name plus implied overrides.

    Args:
        config: A canonical name (``"configs/sam2.1/sam2.1_hiera_t.yaml"``), an alias
            (``"sam2.1_hiera_t"``, ``"sam2.1-tiny"``, ``"facebook/sam2.1-hiera-tiny"``,
            ``"sam2.1_hiera_tiny.pt"``), :data:`TINY_TEST_CONFIG`, or any other ``.yaml``
            name inside the sam2 package (passed to Hydra unchanged).

    Returns:
        ``(hydra_config_name, overrides)``; ``overrides`` is empty except for derived
        pseudo-configs.

    Raises:
        ValueError: The name is neither known nor a ``.yaml`` name.
    """
    if config in _DERIVED_CONFIGS:
        return _DERIVED_CONFIGS[config]
    if config in OFFICIAL_CONFIGS:
        return config, ()
    key = _normalise(config)
    if key in _ALIASES:
        return _ALIASES[key], ()
    if key == _normalise(TINY_TEST_CONFIG):
        return _DERIVED_CONFIGS[TINY_TEST_CONFIG]
    if config.endswith((".yaml", ".yml")):
        # Let Hydra look it up inside the sam2 package (e.g. a user-added config).
        return config, ()
    known = ", ".join(sorted(OFFICIAL_CONFIGS))
    raise ValueError(
        f"Unknown SAM2 config {config!r}. Use one of {known}, an alias such as "
        f"'sam2.1_hiera_t' or 'sam2.1-tiny', or {TINY_TEST_CONFIG!r}."
    )


def _merge_overrides(*groups: Sequence[str]) -> list[str]:
    """Concatenates Hydra overrides, keeping only the last one for each key.

    Why: the explicit ``image_size`` argument must win over a derived config's default
    and over ``overrides``. Hydra 1.3 happens to apply repeated keys last-wins, but
    de-duplicating makes that independent of Hydra's version and keeps the list readable.
    """
    merged: dict[str, str] = {}
    for group in groups:
        for override in group:
            key = override.split("=", 1)[0].lstrip("+~")
            merged.pop(key, None)  # re-insert so the order follows the last occurrence
            merged[key] = override
    return list(merged.values())


def _ensure_hydra() -> None:
    """Re-initialises Hydra on the sam2 package if someone cleared the global state.

    ``import sam2`` initialises it once; tools that call ``GlobalHydra.instance().clear()``
    would otherwise make every config lookup fail with an obscure error.
    """
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        initialize_config_module("sam2", version_base="1.2")


def _read_checkpoint(path: Path, config: str | None = None) -> Mapping[str, torch.Tensor]:
    """Reads the ``"model"`` state dict of a SAM2 checkpoint, with explicit errors.

    Args:
        path: Checkpoint file.
        config: Canonical config name, to list its matching URL first when missing.
    """
    if not path.is_file():
        # The URL of the requested config first, then the others.
        ordered = sorted(CHECKPOINT_URLS.items(), key=lambda item: item[0] != config)
        urls = "\n  ".join(url for _, url in ordered)
        raise FileNotFoundError(
            f"SAM2 checkpoint not found: {path}. Download an official checkpoint "
            f"(nothing is downloaded automatically), e.g.:\n  {urls}"
        )
    try:
        # weights_only: official checkpoints are plain tensors; refuses arbitrary pickles.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for non-torch files
        raise ValueError(
            f"Cannot read SAM2 checkpoint {path}: not a torch checkpoint file "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(obj, Mapping) or "model" not in obj:
        hint = ""
        if isinstance(obj, Mapping) and any(str(k).startswith("image_encoder.") for k in obj):
            hint = " It looks like a bare state dict; save it as torch.save({'model': state_dict}, path)."
        found = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"SAM2 checkpoint {path} has no 'model' key (found {found}); expected the "
            f"official format {{'model': state_dict}}.{hint}"
        )
    state = obj["model"]
    if not isinstance(state, Mapping):
        raise ValueError(f"SAM2 checkpoint {path}: 'model' is not a state dict.")
    return state


def _guess_config(state: Mapping[str, torch.Tensor]) -> str | None:
    """Guesses the official config a state dict belongs to, or None."""
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    code = _TRUNK_SIGNATURES.get((int(patch.shape[0]), len(blocks)))
    if code is None:
        return None
    # SAM 2.1 added the spatial no-object embedding; SAM 2 checkpoints lack it.
    version = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    return f"configs/{version}/{version}_hiera_{code}.yaml"


def _load_state(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    path: Path,
    config: str,
) -> None:
    """Loads ``state`` strictly, turning key/shape mismatches into a readable ValueError.

    sam2's own loader raises a bare RuntimeError (details only in the log), and PyTorch's
    message for a wrong model size lists hundreds of keys; compare first, then load.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("size mismatch", mismatched),
        ):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{len(items)} {label}: {items[:3]}{more}")
        guess = _guess_config(state)
        hint = f" It probably belongs to config {guess!r}." if guess and guess != config else ""
        raise ValueError(f"SAM2 checkpoint {path} does not match config {config!r}: " + "; ".join(parts) + "." + hint)
    model.load_state_dict(state, strict=True)


_EXTENSION_NOTED = False


def _note_missing_cuda_extension() -> None:
    """Says once per process that sam2's optional CUDA extension is not built, and silences
    sam2's own warning, which repeats it at every propagated frame.

    In sam2 1.1.0 the extension (``sam2._C``) holds one kernel: the connected components
    behind ``fill_holes_in_mask_scores``, which fills holes of at most ``fill_hole_area``
    pixels in propagated masks. Without it sam2 skips that step and nothing else changes.
    """
    global _EXTENSION_NOTED
    if _EXTENSION_NOTED or importlib.util.find_spec("sam2._C") is not None:
        return
    _EXTENSION_NOTED = True
    warnings.filterwarnings("ignore", message=r"cannot import name '_C' from 'sam2'", category=UserWarning)
    # tqdm.write keeps the progress bars of a running cache computation intact.
    tqdm.write(
        "note: sam2's optional CUDA extension (sam2._C) is not built, and nothing here needs it: "
        "sam2 only skips filling small holes in propagated masks (fill_hole_area), as on every "
        "CPU-only install. To have it, reinstall sam2 with CUDA present and SAM2_BUILD_CUDA=1.",
        file=sys.stderr,
    )


def _build(
    builder_name: str,
    config: str,
    checkpoint: str | Path | None,
    device: str | torch.device,
    image_size: int | None,
    overrides: Sequence[str],
    mode: Literal["eval", "train"],
    apply_postprocessing: bool,
) -> SAM2Base:
    """Shared implementation of :func:`load_sam2` and :func:`load_sam2_video_predictor`."""
    from sam2 import build_sam

    _note_missing_cuda_extension()
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    if image_size is not None and (image_size <= 0 or image_size % 32):
        # Hiera tiles its 8x8 window position embedding over the stride-4 grid, and the
        # mask decoder upsamples stride-16 features x4: sizes must be multiples of 32.
        raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
    hydra_name, implied = resolve_config(config)
    extra = [f"++model.image_size={image_size}"] if image_size is not None else []
    hydra_overrides = _merge_overrides(implied, overrides, extra)

    # Read the checkpoint before instantiating: a wrong path should fail in milliseconds.
    path = Path(checkpoint).expanduser() if checkpoint is not None else None
    state = _read_checkpoint(path, hydra_name) if path is not None else None

    _ensure_hydra()
    builder = getattr(build_sam, builder_name)
    try:
        # ckpt_path=None: we load ourselves, to give useful errors (see _load_state).
        model = builder(
            hydra_name,
            ckpt_path=None,
            device="cpu",
            mode=mode,
            hydra_overrides_extra=hydra_overrides,
            apply_postprocessing=apply_postprocessing,
        )
    except Exception as err:
        from hydra.errors import MissingConfigException

        if isinstance(err, MissingConfigException):
            raise ValueError(
                f"SAM2 config {hydra_name!r} not found in the sam2 package; known: {sorted(OFFICIAL_CONFIGS)}"
            ) from err
        raise
    if state is not None:
        _load_state(model, state, path, hydra_name if not implied else config)
    model = model.to(device)
    # .to() keeps the mode, but be explicit: sam2's builder set it before loading.
    model.train(mode == "train")
    return model


def load_sam2(
    config: str,
    checkpoint: str | Path | None,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    overrides: Sequence[str] = (),
    mode: Literal["eval", "train"] = "eval",
    apply_postprocessing: bool = True,
) -> SAM2Base:
    """Builds a SAM2 model (``SAM2Base``) from a config and a local checkpoint.

    Args:
        config: Config name or alias (see :func:`resolve_config`), e.g.
            ``"configs/sam2.1/sam2.1_hiera_t.yaml"``, ``"sam2.1-tiny"`` or
            :data:`TINY_TEST_CONFIG`.
        checkpoint: Local checkpoint path in the official format ``{"model": state_dict}``;
            None leaves random weights (tests). See the module docstring for the URLs of
            Meta's checkpoints; nothing is downloaded.
        device: Device to move the model to.
        image_size: Input resolution override (``++model.image_size``); must be a multiple
            of 32. Official checkpoints load at any such size (all position embeddings are
            interpolated), but quality is best at 1024. Use :func:`image_predictor` for a
            SAM2ImagePredictor that works at this size.
        overrides: Extra Hydra overrides (``"++model.key=value"``), applied after those of
            derived configs and before ``image_size``.
        mode: ``"eval"`` or ``"train"``.
        apply_postprocessing: sam2's inference post-processing overrides (dynamic
            multimask fallback; for the video predictor also hole filling).

    Returns:
        The model, on ``device``, in the requested mode.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: Unknown config, unreadable checkpoint, no ``"model"`` key, or a
            checkpoint that does not match the config (wrong size or version).
    """
    return _build(
        "build_sam2",
        config,
        checkpoint,
        device,
        image_size,
        overrides,
        mode,
        apply_postprocessing,
    )


def load_sam2_video_predictor(
    config: str,
    checkpoint: str | Path | None,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    overrides: Sequence[str] = (),
    mode: Literal["eval", "train"] = "eval",
    apply_postprocessing: bool = True,
) -> SAM2VideoPredictor:
    """Builds a ``SAM2VideoPredictor`` (a ``SAM2Base`` subclass) like :func:`load_sam2`.

    Uses ``sam2.build_sam.build_sam2_video_predictor``; arguments, return conventions and
    errors are those of :func:`load_sam2`.
    """
    return _build(  # type: ignore[return-value]
        "build_sam2_video_predictor",
        config,
        checkpoint,
        device,
        image_size,
        overrides,
        mode,
        apply_postprocessing,
    )


def backbone_feature_sizes(model: SAM2Base) -> list[tuple[int, int]]:
    """Spatial sizes of the three backbone levels the SAM decoder uses, high-res first.

    The lowest level has stride ``model.backbone_stride`` (16); the two high-resolution
    levels (used when ``use_high_res_features_in_sam``) are 2x and 4x larger. At 1024 this
    gives sam2's hard-coded ``[(256, 256), (128, 128), (64, 64)]``.
    """
    low = model.image_size // model.backbone_stride
    return [(4 * low, 4 * low), (2 * low, 2 * low), (low, low)]


def image_predictor(model: SAM2Base, **kwargs: object) -> SAM2ImagePredictor:
    """Wraps ``model`` in a ``SAM2ImagePredictor`` that works at the model's image size.

    ``SAM2ImagePredictor`` hard-codes ``_bb_feat_sizes`` for 1024 input, which breaks
    ``set_image`` at any other ``image_size``; this recomputes them.

    Args:
        model: A SAM2 model (from :func:`load_sam2` or the video predictor).
        **kwargs: Passed to ``SAM2ImagePredictor`` (``mask_threshold``, ``max_hole_area``,
            ``max_sprinkle_area``).

    Returns:
        The predictor.
    """
    predictor = SAM2ImagePredictor(model, **kwargs)
    predictor._bb_feat_sizes = backbone_feature_sizes(model)
    return predictor
