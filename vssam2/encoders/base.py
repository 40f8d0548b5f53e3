"""The interface every frozen image encoder implements, and what the encoders share.

A :class:`FrozenEncoder` turns a batch of RGB frames as they come from the data (uint8,
channels last, any size) into a feature map for masked-average pooling. Each encoder does
its own resizing and normalisation, so callers never need to know what a backbone expects.
:meth:`FrozenEncoder.describe` names the exact features an encoder computes; it is the
cache key of precomputed features, so it holds every argument that changes them and a
fingerprint of the weights.

Also here, because more than one encoder needs them: reading torch checkpoint files with
``weights_only`` (:func:`load_torch_file`), checkpoint fingerprints
(:func:`checkpoint_sha256`), the mismatch report of a strict state-dict check
(:func:`state_dict_mismatch`), seeded initialisation (:func:`seeded`) and argument checks.
"""

from __future__ import annotations

import abc
import hashlib
import pickle
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

#: ImageNet mean / std of RGB in [0, 1] (SAM2, MiT/mmseg and most timm models use them;
#: mmseg's 123.675, 116.28, 103.53 / 58.395, 57.12, 57.375 are the same numbers x 255).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class FrozenEncoder(torch.nn.Module, abc.ABC):
    """A frozen image encoder: frames ``(B, H, W, 3)`` uint8 RGB -> features ``(B, C, h, w)`` float32.

    Always in eval mode and without gradients: parameters have ``requires_grad=False``,
    ``train(mode)`` keeps eval mode (so a parent LightningModule's ``.train()`` cannot turn
    dropout / drop-path / batch-norm updates on), and :meth:`forward` runs under
    ``torch.no_grad()``. Not ``torch.inference_mode()``: its outputs would be inference
    tensors, which autograd refuses to save for backward, and the features feed a trainable
    head.

    Frames may be on any device; they are moved to the encoder's device as uint8 (4x less
    to transfer than float32) and preprocessed there. With ``autocast=True`` the encoder
    runs under bf16 autocast when the input is on CUDA (on CPU autocast is never used, so
    CPU results are exact float32); the output is always float32.

    Subclasses set :attr:`out_channels`, implement :meth:`preprocess`, :meth:`encode` and
    :meth:`_identity`, and call :meth:`_freeze` at the end of ``__init__``.

    One kind of encoder is not frozen all through: an adapted one
    (:class:`~vssam2.encoders.sam2_lora.SAM2LoRAEncoder`) keeps its base weights frozen but
    trains small adapters, so its features change during training: its :attr:`trainable` is True,
    and nothing caches its features.

    Attributes:
        out_channels: Channels ``C`` of the features.
        autocast: Whether bf16 autocast is used for CUDA input.
    """

    out_channels: int

    def __init__(self, autocast: bool = True) -> None:
        super().__init__()
        self.autocast = bool(autocast)

    # -- what subclasses implement -------------------------------------------------------

    @abc.abstractmethod
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """Resizes and normalises frames for the backbone.

        Args:
            frames: ``(B, H, W, 3)`` uint8 RGB on the encoder's device (validated).

        Returns:
            ``(B, 3, h_in, w_in)`` float32 images.
        """

    @abc.abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Runs the backbone on preprocessed images.

        Args:
            images: ``(B, 3, h_in, w_in)`` float32 from :meth:`preprocess`.

        Returns:
            ``(B, C, h, w)`` features (any float dtype; :meth:`forward` casts to float32).
        """

    @abc.abstractmethod
    def _identity(self) -> dict[str, Any]:
        """The subclass part of :meth:`describe`: every argument that changes the features."""

    # -- the shared behaviour ------------------------------------------------------------

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Computes features of a batch of frames.

        Args:
            frames: ``(B, H, W, 3)`` uint8 RGB frames, on any device.

        Returns:
            ``(B, out_channels, h, w)`` float32 features on the encoder's device, without
            ``grad_fn``.

        Raises:
            TypeError: ``frames`` is not a tensor.
            ValueError: Wrong dtype (not uint8) or shape (not ``(B, H, W, 3)`` with
                ``B, H, W > 0``).
        """
        self._check_frames(frames)
        with torch.no_grad():
            return self._features(frames.to(self._device()))

    def _features(self, frames: torch.Tensor) -> torch.Tensor:
        """Preprocess + encode of validated ``(B, H, W, 3)`` uint8 frames on the encoder's device
        -> ``(B, C, h, w)`` float32 (autograd as the caller has it)."""
        images = self.preprocess(frames)  # (B, 3, h_in, w_in) float32
        with self._autocast(images.device):
            features = self.encode(images)  # (B, C, h, w)
        return features.float()

    def _autocast(self, device: torch.device) -> torch.autocast:
        """bf16 autocast when :attr:`autocast` is set and ``device`` is CUDA; a no-op otherwise."""
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast and device.type == "cuda")

    @property
    def trainable(self) -> bool:
        """Whether some parameters train (an adapted encoder's adapters); False once frozen."""
        return any(p.requires_grad for p in self.parameters())

    def describe(self) -> dict[str, Any]:
        """A JSON-able identity of the features this encoder computes (a cache key).

        Returns:
            ``{"class": <class name>, "autocast": bool, ...}`` plus every constructor
            argument that changes the features (normalised, e.g. ``level=-1`` is stored as
            the non-negative index it means) and either ``"checkpoint_sha256"`` (hex digest
            of the weights file) or ``"seed"`` (random initialisation).
        """
        return {"class": type(self).__name__, "autocast": self.autocast, **self._identity()}

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Keeps eval mode whatever ``mode`` says (the encoder is frozen)."""
        return super().train(False)

    # -- helpers for subclasses ----------------------------------------------------------

    def _freeze(self) -> None:
        """Turns gradients off for every parameter and switches to eval mode."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def _device(self) -> torch.device:
        """The device of the encoder's weights (CPU for a weightless encoder)."""
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @staticmethod
    def _check_frames(frames: torch.Tensor) -> None:
        """Raises a clear error unless ``frames`` is a non-empty ``(B, H, W, 3)`` uint8 tensor."""
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise ValueError(
                f"frames must be uint8 RGB in 0..255, got dtype {frames.dtype} (the encoder "
                "normalises itself; pass raw frames, not preprocessed images)"
            )
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must have shape (B, H, W, 3) (channels last), got {tuple(frames.shape)}")
        if min(frames.shape[:3]) == 0:
            raise ValueError(f"frames must be non-empty, got shape {tuple(frames.shape)}")

    @staticmethod
    def _resize_normalise(
        frames: torch.Tensor,
        size: tuple[int, int] | None,
        mean: torch.Tensor,
        std: torch.Tensor,
        antialias: bool,
    ) -> torch.Tensor:
        """uint8 frames -> resized, normalised float32 images.

        Args:
            frames: ``(B, H, W, 3)`` uint8 RGB.
            size: ``(h, w)`` to resize to (bilinear, stretching), or None to keep ``(H, W)``.
            mean: ``(1, 3, 1, 1)`` float32 mean of RGB in [0, 1].
            std: ``(1, 3, 1, 1)`` float32 standard deviation of RGB in [0, 1].
            antialias: Low-pass filter when shrinking (as torchvision / PIL resizing does);
                False mimics OpenCV's ``INTER_LINEAR`` (mmseg's test-time resize).

        Returns:
            ``(B, 3, h, w)`` float32.
        """
        images = frames.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W) float32 in [0, 1]
        if size is not None and tuple(images.shape[-2:]) != tuple(size):
            images = F.interpolate(
                images, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias
            )  # (B, 3, h, w)
        return (images - mean) / std


def as_channel_buffer(values: Sequence[float]) -> torch.Tensor:
    """A per-RGB-channel constant shaped ``(1, 3, 1, 1)`` float32, to broadcast over images."""
    if len(values) != 3:
        raise ValueError(f"expected 3 values (R, G, B), got {list(values)}")
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(1, 3, 1, 1)


def check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    """Validates an optional ``(H, W)`` of positive ints; YAML gives lists, accept them."""
    if size is None:
        return None
    if len(size) != 2 or any(int(v) != v or v <= 0 for v in size):
        raise ValueError(f"input_size must be (H, W) with positive ints, got {size!r}")
    return int(size[0]), int(size[1])


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seeds torch's CPU generator inside the block and restores the caller's state after.

    Random initialisation must depend only on ``seed``, and building an encoder must not
    reset the global stream a training run (``seed_everything``) relies on.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# -- checkpoint files ---------------------------------------------------------------------

_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def checkpoint_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's contents, read in 1 MiB chunks.

    Memoised per (resolved path, size, modification time): hashing a 900 MB SAM2-L
    checkpoint takes seconds, and several encoders may load the same file.

    Args:
        path: The file.

    Returns:
        64 hex digits.

    Raises:
        FileNotFoundError: No such file.
    """
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with resolved.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


# Globals that released training checkpoints pickle beside the weights and that are safe to
# rebuild: mmcv's meta holds numpy scalars (e.g. a best score), timm's train script saves
# its argparse.Namespace. weights_only refuses them; anything else still fails.
_SAFE_GLOBAL_PREFIXES: tuple[str, ...] = ("numpy.", "argparse.Namespace", "collections.OrderedDict")


def load_torch_file(path: str | Path, what: str) -> Any:
    """``torch.load`` of a local checkpoint with ``weights_only=True`` and readable errors.

    Args:
        path: The file.
        what: What the file should be, for messages (e.g. ``"MiT checkpoint"``).

    Returns:
        The unpickled object, tensors on CPU.

    Raises:
        FileNotFoundError: No such file (nothing is ever downloaded).
        ValueError: Not a torch file, or it pickles objects other than tensors, containers,
            numpy scalars/arrays and ``argparse.Namespace``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (nothing is downloaded automatically)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as refusal:
        # Either not a torch file, or weights_only refused a global: allow the latter only
        # for globals on the short safe list.
        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a zip checkpoint (other file, or torch's legacy format)
            needed = []
        unsafe = [g for g in needed if not g.startswith(_SAFE_GLOBAL_PREFIXES)]
        if not needed or unsafe:
            if unsafe:
                reason = f"it pickles {unsafe} besides tensors, and these are not on the safe list"
            else:
                reason = str(refusal).splitlines()[0] if str(refusal) else type(refusal).__name__
            raise ValueError(f"Cannot read {what} {path} with weights_only=True: {reason}") from refusal
        allowed = [_import_global(name) for name in needed]
        if any(name.startswith("numpy.") for name in needed):
            # The per-dtype classes (numpy.dtypes.Float64DType ...) are needed too but not
            # listed by get_unsafe_globals_in_checkpoint.
            import numpy as np

            allowed += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for files that are not checkpoints
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"Cannot read {what} {path}: not a torch checkpoint ({type(err).__name__}: {first})") from err


def _import_global(qualified: str) -> Any:
    """Imports ``"module.attr"`` (as listed by ``get_unsafe_globals_in_checkpoint``)."""
    import importlib

    module, _, attr = qualified.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def state_dict_mismatch(
    expected: Mapping[str, torch.Tensor],
    found: Mapping[str, Any],
    shown: int = 5,
) -> str | None:
    """Describes how ``found`` differs from ``expected`` (keys and shapes), or None if it matches.

    Args:
        expected: The model's state dict.
        found: The checkpoint's (already filtered / mapped) state dict.
        shown: How many keys of each kind to list.

    Returns:
        ``"N missing: [...] (+k more); N unexpected: [...]; N shape mismatch: [...]"`` or None.
    """

    # Batch-norm step counters are listed last: they name no weight and would crowd out
    # the keys that tell which layers differ.
    def order(keys: list[str]) -> list[str]:
        return sorted(keys, key=lambda k: k.endswith("num_batches_tracked"))  # stable

    missing = order([k for k in expected if k not in found])
    unexpected = order([k for k in found if k not in expected])
    mismatched = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(getattr(found[k], "shape", ())) != tuple(v.shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
            parts.append(f"{len(items)} {label}: {items[:shown]}{more}")
    return "; ".join(parts) if parts else None
