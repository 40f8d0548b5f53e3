"""CLIP-family image encoders (CLIP, SigLIP) as frozen encoders with text-aligned dense features.

Dense features: the vision tower's patch tokens (its class token dropped), through the tower's
final layer norm and, for CLIP, its ``visual_projection``: the map CLIP applies to its pooled
token, applied to every patch (as MaskCLIP does). Each patch vector then lives in the space of
the text embeddings, so a masklet's masked-average pool (Eq. 3) can be matched to class names
by cosine similarity (zero-shot) or fed to the MLP head like any other encoder's features.

Pooled image embeddings (:meth:`CLIPEncoder.image_embeddings`, ``get_image_features``): the
tower's own pooled head on whole images, e.g. masked crops of masklets
(:meth:`CLIPEncoder.preprocess_crops` prepares them as the folder's image processor does).
Dense pooling is the default of the zero-shot rows: one ViT pass per frame serves every
masklet of the frame (a crop costs a pass per masklet of the clip), and the pooled vector
covers exactly the masklet's pixels, as Eq. 3 does for SAM2 and MiT (docs/clip.md: the
measured costs of both, and when crops are the cheaper one).

Weights: a local folder in transformers' format only (``CLIPModel`` / ``SiglipModel``
``save_pretrained``, e.g. ``huggingface-cli download openai/clip-vit-base-patch16 --local-dir
DIR``); nothing is downloaded. The folder's image processor config gives the normalisation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vssam2.console import no_transformers_progress_bars
from vssam2.encoders.base import FrozenEncoder, as_channel_buffer

#: ``model_type`` of the folders this encoder reads.
CLIP_MODEL_TYPES: tuple[str, ...] = ("clip", "siglip")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: PIL resampling codes of image processor configs -> torchvision ``InterpolationMode`` names
#: (CLIP's processor uses 3, bicubic; torchvision is imported only when crops are prepared).
_RESAMPLE = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}


def check_clip_folder(folder: str | Path) -> tuple[Path, str]:
    """The folder and its ``model_type``, or an error naming the folder and what is wrong.

    Raises:
        FileNotFoundError: no such folder, or no ``config.json``, weights or image processor config.
        ValueError: a config of another model type, or an unreadable one.
    """
    path = Path(folder).expanduser()
    hint = (
        "give a local CLIP / SigLIP folder in transformers' format (e.g. `huggingface-cli download "
        "openai/clip-vit-base-patch16 --local-dir DIR`); nothing is downloaded here"
    )
    if not path.is_dir():
        raise FileNotFoundError(f"CLIP checkpoint folder {path} does not exist: {hint}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"CLIP checkpoint folder {path} has no config.json: {hint}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_file}: not a readable config ({error})") from error
    if model_type not in CLIP_MODEL_TYPES:
        raise ValueError(
            f"{config_file}: model_type {model_type!r}, but the CLIP encoder reads {list(CLIP_MODEL_TYPES)} folders"
        )
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"CLIP checkpoint folder {path} has no weights ({' / '.join(_WEIGHT_FILES[:1])}): {hint}"
        )
    if not any((path / name).is_file() for name in _PROCESSOR_FILES):
        raise FileNotFoundError(
            f"CLIP checkpoint folder {path} has no image processor config (preprocessor_config.json): {hint}"
        )
    return path, str(model_type)


def _folder_sha256(path: Path) -> str:
    """SHA-256 over the folder's config, processor and weights files (names and contents)."""
    digest = hashlib.sha256()
    for name in ("config.json", *_PROCESSOR_FILES, *_WEIGHT_FILES):
        file = path / name
        if file.is_file():
            digest.update(name.encode())
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


class CLIPEncoder(FrozenEncoder):
    """The image tower of a CLIP / SigLIP checkpoint: dense, text-aligned patch features.

    Preprocessing: the frame is stretched to ``image_size x image_size`` (bilinear,
    antialiased; the grid stays square as for SAM2), scaled to [0, 1] and normalised with the
    folder's ``image_mean`` / ``image_std``. Position embeddings are interpolated when
    ``image_size`` is not the checkpoint's.

    Whole-image embeddings (masked crops, :meth:`preprocess_crops` then
    :meth:`image_embeddings`) run at the tower's own size (:attr:`crop_size`) and are prepared
    as the folder's image processor prepares images, so a square crop's embedding is
    ``get_image_features`` of that crop given to CLIP's processor.

    Args:
        checkpoint: local CLIP / SigLIP folder (``CLIPModel`` / ``SiglipModel`` format).
        image_size: input resolution (a multiple of the patch size); None = the checkpoint's.
        projected: map patch tokens into the text embedding space (CLIP's ``visual_projection``;
            SigLIP's tokens already share it); False = raw tower features.
        autocast: bf16 autocast for CUDA input.

    Raises:
        FileNotFoundError, ValueError: see :func:`check_clip_folder`; a bad ``image_size``.
    """

    def __init__(
        self, checkpoint: str, image_size: int | None = None, projected: bool = True, autocast: bool = True
    ) -> None:
        super().__init__(autocast=autocast)
        from transformers import AutoModel

        path, self.model_type = check_clip_folder(checkpoint)
        with no_transformers_progress_bars():
            model = AutoModel.from_pretrained(path, local_files_only=True)
        vision_config = model.config.vision_config
        self.patch_size = int(vision_config.patch_size)
        self.native_size = int(vision_config.image_size)
        self.image_size = int(image_size) if image_size is not None else self.native_size
        if self.image_size <= 0 or self.image_size % self.patch_size:
            raise ValueError(
                f"image_size must be a positive multiple of the patch size {self.patch_size}, got {image_size}"
            )
        self.vision_model = model.vision_model
        self.projection = model.visual_projection if (projected and self.model_type == "clip") else None
        self.projected = bool(projected)
        self.out_channels = int(
            self.projection.out_features if self.projection is not None else vision_config.hidden_size
        )
        processor = _read_processor(path)
        self.register_buffer("mean", as_channel_buffer(processor["image_mean"]), persistent=False)
        self.register_buffer("std", as_channel_buffer(processor["image_std"]), persistent=False)
        #: Side of the images :meth:`image_embeddings` takes: the tower's own (CLIP's processor
        #: crop size), whatever ``image_size`` the dense features use.
        self.crop_size = self.native_size
        self.crop_resample = _RESAMPLE[processor["resample"]]  # torchvision InterpolationMode name
        self.checkpoint = str(path.resolve())  # the folder, for its text tower
        self._sha256 = _folder_sha256(path)
        del model
        self._freeze()

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, 3, S, S)`` float32, normalised as the checkpoint's processor."""
        size = (self.image_size, self.image_size)
        return self._resize_normalise(frames, size, self.mean, self.std, antialias=True).contiguous()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``(B, C, S / patch, S / patch)`` patch features."""
        interpolate = self.image_size != self.native_size
        hidden = self.vision_model(pixel_values=images, interpolate_pos_encoding=interpolate).last_hidden_state
        if self.model_type == "clip":
            hidden = self.vision_model.post_layernorm(hidden[:, 1:])  # (B, N, D): the class token dropped
        # SigLIP has no class token, and its last_hidden_state is already post-layernormed.
        if self.projection is not None:
            hidden = self.projection(hidden)  # (B, N, C)
        side = self.image_size // self.patch_size
        return hidden.transpose(1, 2).reshape(hidden.shape[0], -1, side, side)

    @property
    def fill_colour(self) -> torch.Tensor:
        """``(3,)`` uint8: the folder's ``image_mean`` as an RGB colour (normalises to about 0),
        the colour of the pixels outside a masklet in a masked crop."""
        return (self.mean.view(3) * 255).round().to(torch.uint8)

    def preprocess_crops(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        """Square ``(3, h, h)`` uint8 RGB crops -> ``(N, 3, S, S)`` float32, ``S`` = :attr:`crop_size`,
        as the folder's image processor prepares an image (CLIP's: torchvision's antialiased
        resize with the processor's ``resample``, bicubic, on the uint8 image; its centre crop is
        a no-op on a square image; then rescaled to [0, 1] and normalised).

        Raises:
            ValueError: no crop, or a crop that is not a non-empty square ``(3, h, h)`` uint8.
        """
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as tvF

        if not crops:
            raise ValueError("no crops to preprocess")
        size = [self.crop_size, self.crop_size]
        interpolation = getattr(InterpolationMode, self.crop_resample)
        resized = []
        for crop in crops:
            if crop.dtype != torch.uint8 or crop.ndim != 3 or crop.shape[0] != 3 or crop.shape[1] != crop.shape[2]:
                raise ValueError(
                    f"crops must be square (3, h, h) uint8 RGB, got {tuple(crop.shape)} {crop.dtype} "
                    "(a non-square crop would be stretched, which CLIP's processor never does)"
                )
            if crop.shape[1] == 0:
                raise ValueError("crops must be non-empty")
            resized.append(
                tvF.resize(crop.to(self.mean.device), size, interpolation=interpolation, antialias=True)
            )  # (3, S, S) uint8
        images = torch.stack(resized).float() / 255.0  # (N, 3, S, S) in [0, 1]
        return (images - self.mean) / self.std

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """The tower's pooled image embedding (``get_image_features``) of preprocessed images.

        CLIP: the class token through the final layer norm and, when ``projected``, the
        ``visual_projection``; SigLIP: its attention-pooling head. Same space and width as the
        dense features (:attr:`out_channels`), so both match the same text embeddings.

        Args:
            images: ``(N, 3, S, S)`` float32 from :meth:`preprocess_crops` (``S`` = :attr:`crop_size`).

        Returns:
            ``(N, out_channels)`` float32, without ``grad_fn`` (bf16 autocast on CUDA as in
            :meth:`forward` when ``autocast``).
        """
        side = self.crop_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, side, side):
            raise ValueError(f"images must be (N, 3, {side}, {side}) (preprocess_crops), got {tuple(images.shape)}")
        with torch.no_grad():
            images = images.to(self._device())
            with self._autocast(images.device):
                pooled = self.vision_model(pixel_values=images).pooler_output  # (N, D)
                if self.projection is not None:
                    pooled = self.projection(pooled)  # (N, C)
            return pooled.float()

    def _identity(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "checkpoint_sha256": self._sha256,
            "image_size": self.image_size,
            "projected": self.projected,
        }


def _read_processor(path: Path) -> dict[str, Any]:
    """``image_mean`` / ``image_std`` and ``resample`` (a PIL code; default 3, bicubic, CLIP's) of
    the folder's image processor config."""
    for name in _PROCESSOR_FILES:
        file = path / name
        if file.is_file():
            data = json.loads(file.read_text())
            data = data.get("image_processor", data)  # processor_config.json nests it
            if "image_mean" in data and "image_std" in data:
                resample = data.get("resample", 3)
                if resample not in _RESAMPLE:
                    raise ValueError(f"{file}: resample {resample!r} is not one of PIL's codes {sorted(_RESAMPLE)}")
                return {"image_mean": data["image_mean"], "image_std": data["image_std"], "resample": int(resample)}
    raise ValueError(f"CLIP checkpoint folder {path}: the image processor config has no image_mean / image_std")


def clip_text_embeddings(
    checkpoint: str, class_names: Sequence[str], templates: Sequence[str] = ("a photo of a {}.",)
) -> torch.Tensor:
    """``(C, D)`` unit-norm text embeddings of each class, averaged over ``templates``
    (prompt ensembling: each template's embedding is normalised, then the mean is).

    Args:
        checkpoint: the same folder as the image encoder's (its text tower and tokenizer).
        class_names: one name per class.
        templates: prompt templates, each with one ``{}``.
    """
    from transformers import AutoModel, AutoTokenizer

    path, _ = check_clip_folder(checkpoint)
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"template {template!r} must hold exactly one {{}}")
    if not class_names:
        raise ValueError("no class names to embed")
    with no_transformers_progress_bars():
        model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    per_template = []
    with torch.no_grad():
        for template in templates:
            texts = [template.format(name) for name in class_names]
            # SigLIP was trained on max-length padding; CLIP pools its end-of-text token.
            padding = "max_length" if model.config.model_type == "siglip" else True
            limit = int(model.config.text_config.max_position_embeddings)
            tokens = tokenizer(texts, padding=padding, truncation=True, max_length=limit, return_tensors="pt")
            features = model.get_text_features(**tokens)  # (C, D)
            features = features if isinstance(features, torch.Tensor) else features.pooler_output
            per_template.append(F.normalize(features.float(), dim=-1))
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)


def write_tiny_clip(
    folder: str | Path,
    kind: str = "clip",
    seed: int = 0,
    vision: dict[str, int] | None = None,
    projection_dim: int = 24,
) -> Path:
    """Writes a tiny random-weight CLIP (or SigLIP) folder in transformers' real format: model,
    image processor and an offline byte-level CLIP tokenizer (tests and the demo; its features
    and text embeddings are meaningless).

    Args:
        folder: where to write (created if absent).
        kind: "clip" or "siglip".
        seed: seed of the random weights (the global RNG is left as it was).
        vision: vision-config entries replacing the tiny ones (e.g. ViT-B/16's ``hidden_size``
            768, 12 layers and heads, ``image_size`` 224, ``patch_size`` 16, for benchmarks);
            the image processor's size follows ``image_size``.
        projection_dim: CLIP's embedding width (text and image projections).
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, SiglipConfig, SiglipImageProcessor, SiglipModel

    from vssam2.masklets.sam3_model import tiny_clip_tokenizer

    if kind not in CLIP_MODEL_TYPES:
        raise ValueError(f"kind must be one of {CLIP_MODEL_TYPES}, got {kind!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_clip_tokenizer()
    text = {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    text |= {"num_attention_heads": 4, "max_position_embeddings": 64}
    text |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    text |= {"pad_token_id": tokenizer.pad_token_id}
    vision_config = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    vision_config |= {"image_size": 32, "patch_size": 8} | dict(vision or {})
    side = int(vision_config["image_size"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "clip":
            model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision_config, projection_dim=projection_dim))
            processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        else:
            model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision_config))
            processor = SiglipImageProcessor(size={"height": side, "width": side})
    with no_transformers_progress_bars():
        model.save_pretrained(folder)
    processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
