"""Any timm backbone as a frozen encoder, with weights from a local file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vssam2.encoders.base import (
    FrozenEncoder,
    as_channel_buffer,
    check_size,
    checkpoint_sha256,
    load_torch_file,
    seeded,
    state_dict_mismatch,
)

# Where training checkpoints nest the weights, in the order timm's own
# `timm.models.load_state_dict` looks (EMA weights first: timm's default, use_ema=True).
_NESTED_KEYS: tuple[str, ...] = ("state_dict_ema", "model_ema", "state_dict", "model")


class TimmEncoder(FrozenEncoder):
    """A timm model's feature level (``feature_info``) as a frozen encoder.

    Design: the full model is created (``num_classes=0``: no classifier), a local weights
    file is checked key by key against it and loaded strictly, and the model is then pruned
    to the chosen level with ``prune_intermediate_layers`` and run with
    ``forward_intermediates``. That is what timm's ``features_only=True,
    feature_cls="getter"`` does internally, but ``features_only`` models are wrappers whose
    state-dict keys differ from the full model's (``FeatureListNet`` flattens ``stages.0``
    into ``stages_0``), and timm loads weights into them only through its pretrained
    (download) machinery; loading the full model first gives exact key checks and readable
    errors, and pruning gives the same memory and compute as ``features_only``.

    Args:
        model_name: timm model name (``"convnext_tiny"``, ``"resnet50"`` ...; the
            ``test_*`` models are tiny and meant for tests).
        weights: Local weights in timm's key layout for the full model: ``.safetensors``, or
            ``.pth`` / ``.pt`` / ``.bin`` holding a state dict, possibly nested under
            ``"state_dict_ema"``, ``"model_ema"``, ``"state_dict"`` or ``"model"`` (first
            found wins, as in timm's ``load_state_dict``). Classifier keys (the
            ``pretrained_cfg["classifier"]`` module) are ignored; every other key must match
            the model exactly. None keeps a random initialisation seeded with ``seed``.
        level: Index into ``model.feature_info`` (negative counts from the end); for
            hierarchical CNNs typically strides 2/4/8/16/32 or 4/8/16/32, for ViTs one level
            per block, all at stride 16.
        input_size: ``(H, W)`` to resize frames to (bilinear, antialiased, stretching).
            None feeds frames at their own size (convolutional models accept any size),
            except for models whose ``pretrained_cfg`` says ``fixed_input_size``: these get
            their configured input size.
        mean: RGB mean in [0, 1]; None takes the model's ``pretrained_cfg``.
        std: RGB standard deviation in [0, 1]; None takes the model's ``pretrained_cfg``.
        seed: Seed of the random initialisation when ``weights`` is None.
        autocast: bf16 autocast for CUDA input (the output is float32 either way).

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: Unknown model, unreadable file, weights for another model (missing,
            unexpected or shape-mismatched keys, listed), ``level`` out of range, or a bad
            ``input_size`` / ``mean`` / ``std``.
    """

    def __init__(
        self,
        model_name: str,
        weights: str | None = None,
        level: int = -1,
        input_size: tuple[int, int] | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        seed: int = 0,
        autocast: bool = True,
    ) -> None:
        super().__init__(autocast=autocast)
        self.model_name = model_name
        self._seed = int(seed)
        # Read the weights before building the model: a wrong path fails in milliseconds.
        state = _read_timm_weights(Path(weights).expanduser()) if weights is not None else None
        self._sha256 = checkpoint_sha256(weights) if weights is not None else None

        import timm  # here, not at module level: importing timm takes ~1 s

        with seeded(self._seed):
            try:
                model = timm.create_model(model_name, pretrained=False, num_classes=0)
            except RuntimeError as err:  # timm: "Unknown model (...)"
                raise ValueError(f"timm cannot create model {model_name!r}: {err}") from err
        if not hasattr(model, "forward_intermediates"):
            raise ValueError(f"timm model {model_name!r} has no forward_intermediates()")

        if state is not None:
            _load_strict(model, state, Path(weights), model_name)

        feature_info = list(model.feature_info)
        if not -len(feature_info) <= level < len(feature_info):
            levels = [(i, f["module"], f["reduction"]) for i, f in enumerate(feature_info)]
            raise ValueError(
                f"level {level} out of range for timm model {model_name!r}: its feature levels "
                f"(index, module, stride) are {levels}"
            )
        self.level: int = level % len(feature_info)
        self.out_channels = int(feature_info[self.level]["num_chs"])

        cfg = model.pretrained_cfg
        if input_size is None and cfg.get("fixed_input_size"):
            input_size = tuple(cfg["input_size"][-2:])
        self.input_size: tuple[int, int] | None = check_size(input_size)
        self.mean_rgb = tuple(float(v) for v in (mean if mean is not None else cfg["mean"]))
        self.std_rgb = tuple(float(v) for v in (std if std is not None else cfg["std"]))
        self.register_buffer("mean", as_channel_buffer(self.mean_rgb), persistent=False)
        self.register_buffer("std", as_channel_buffer(self.std_rgb), persistent=False)

        # Drop the head, the final norm (as features_only does) and every block after the
        # chosen level: the same memory and compute as a features_only model.
        model.prune_intermediate_layers(indices=[self.level], prune_norm=True, prune_head=True)
        self.model: torch.nn.Module = model
        self._freeze()

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, 3, h, w)`` float32, resized only if ``input_size`` is set."""
        return self._resize_normalise(frames, self.input_size, self.mean, self.std, antialias=True)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, h, w)`` -> ``(B, C, h / stride, w / stride)`` of the chosen level."""
        (features,) = self.model.forward_intermediates(images, indices=[self.level], intermediates_only=True)
        return features

    def _identity(self) -> dict[str, Any]:
        """Model name, level, input size, normalisation, weights."""
        identity: dict[str, Any] = {
            "model_name": self.model_name,
            "level": self.level,
            "input_size": list(self.input_size) if self.input_size is not None else None,
            "mean": list(self.mean_rgb),
            "std": list(self.std_rgb),
        }
        if self._sha256 is not None:
            identity["checkpoint_sha256"] = self._sha256
        else:
            identity["seed"] = self._seed
        return identity


def _read_timm_weights(path: Path) -> dict[str, torch.Tensor]:
    """Reads a state dict from ``.safetensors`` or a torch file, unnesting training checkpoints.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Unreadable file, or no state dict in it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"timm weights not found: {path} (nothing is downloaded automatically)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as err:  # SafetensorError, OSError ...
            raise ValueError(f"Cannot read timm weights {path}: not a safetensors file ({err})") from err
    else:
        obj = load_torch_file(path, "timm weights")
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"timm weights {path} hold no state dict (found {found}); expected tensors by "
            f"parameter name, possibly under one of {list(_NESTED_KEYS)}"
        )
    from timm.models import clean_state_dict

    # Strip DDP's "module." and torch.compile's "_orig_mod." prefixes, as timm does.
    return clean_state_dict(dict(obj))


def _classifier_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """Module names of the classifier (``pretrained_cfg["classifier"]``, a name or a tuple)."""
    names = model.pretrained_cfg.get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    return tuple(names)


def _load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, model_name: str) -> None:
    """Loads ``state`` into ``model`` (classifier keys ignored), or raises a ValueError listing keys."""
    prefixes = _classifier_prefixes(model)
    kept = {k: v for k, v in state.items() if not any(k == p or k.startswith(p + ".") for p in prefixes)}
    problem = state_dict_mismatch(model.state_dict(), kept)
    if problem is not None:
        raise ValueError(
            f"timm weights {path} do not match model {model_name!r} (classifier keys "
            f"{list(prefixes)} ignored): {problem}. Are they weights of another model?"
        )
    model.load_state_dict(kept, strict=True)
