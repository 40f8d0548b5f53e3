"""Loading SAM 3 (transformers' ``Sam3VideoModel``) from a local checkpoint folder, with clear errors.

Nothing here downloads anything. The real checkpoint is the Hugging Face repository
:data:`SAM3_HUB_REPO` (``facebook/sam3``, gated: accept its licence on the model page and log in
first), fetched once by the user into a folder::

    huggingface-cli download facebook/sam3 --local-dir /data/checkpoints/sam3

(``hf download facebook/sam3 --local-dir ...`` with newer huggingface_hub). That folder holds
a ``sam3_video`` config.json (detector + tracker), the weights and the processor / tokenizer
files; :func:`load_sam3` reads it with ``local_files_only=True`` after :func:`check_sam3_folder`
has checked that every part is there.

For tests, :func:`write_tiny_sam3` writes a folder in exactly that format holding a random-weight
model of 4.3 M parameters, 17 MB (:func:`tiny_sam3_config`), and a small CLIP BPE tokenizer built
offline (:func:`tiny_clip_tokenizer`).

Post-processing without the hub: transformers' SAM 3 runs its detection NMS and the hole filling
/ sprinkle removal of masks with a kernel it fetches from the hub on first use
(``kernels-community/cv-utils``), and silently skips both steps when the ``kernels`` package is
missing. :func:`use_local_cv_utils` (called by :func:`load_sam3`) installs a local
implementation of the two functions instead (greedy NMS on the mask-IoU matrix, in torch;
8-connected components, with scipy), so nothing is fetched and every machine gives the same
masks.

transformers' SAM 3 API is young: :func:`check_sam3_private_api` lists the attributes of its
model and inference session that the masklet source reads or writes besides the documented
calls, and fails with every missing one when another transformers is installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vssam2.console import no_transformers_progress_bars

#: Where the real SAM 3 checkpoint lives (downloaded by the user, never by vssam2).
SAM3_HUB_REPO = "facebook/sam3"
#: The ``model_type`` of a SAM 3 video checkpoint's config.json.
SAM3_MODEL_TYPE = "sam3_video"
#: The transformers release the SAM 3 source is tested with.
TESTED_TRANSFORMERS_VERSION = "5.24.0"
#: Weight files ``from_pretrained`` reads, in its order of preference.
WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: Files that configure the processor's image preprocessing (new single-file or older format).
IMAGE_PROCESSOR_FILES: tuple[str, ...] = ("processor_config.json", "preprocessor_config.json")
#: Small files whose content changes the output (hashed in full by :func:`checkpoint_identity`).
CONFIG_FILES: tuple[str, ...] = (
    "config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
#: Text prompts are padded (and must fit) to this many tokens: ``Sam3VideoProcessor.add_text_prompt``
#: pads to 32 and the CLIP text encoder has 32 positions.
MAX_PROMPT_TOKENS = 32
#: Image size of the tiny test model: 8 × 8 patches of 14 pixels, low-resolution masks of 32².
TINY_IMAGE_SIZE = 112

Sam3Dtype = Literal["float32", "bfloat16"]
SAM3_DTYPES: tuple[Sam3Dtype, ...] = ("float32", "bfloat16")

_PATCH = 14
_CLIP_BOS = "<|startoftext|>"
_CLIP_EOS = "<|endoftext|>"


def download_hint(folder: str | Path) -> str:
    """How the user gets the real checkpoint into ``folder`` (nothing is downloaded automatically)."""
    return (
        f"Get the SAM 3 checkpoint once from the Hugging Face repository {SAM3_HUB_REPO} (gated: accept its "
        f"licence on the model page and log in first) with\n  huggingface-cli download {SAM3_HUB_REPO} "
        f"--local-dir {folder}\nand pass that folder; vssam2 never downloads anything."
    )


# ---------------------------------------------------------------------------------------- tiny model


def tiny_sam3_config(image_size: int = TINY_IMAGE_SIZE) -> Any:
    """A random-weight SAM 3 video configuration small enough for CPU tests (~4 M parameters).

    The shapes follow transformers' own tiny SAM 3 test configs (ViT hidden 32, 2 layers, 4 heads,
    patch 14; CLIP text hidden 32, vocabulary 1000, 2 layers; one-layer geometry encoder and
    DETR encoder / decoder, 8 queries; a mask decoder of 2 upsampling stages) with three
    constraints of the video model: the FPN / detector / tracker width is 128 because the
    tracker's memory attention reads 64-channel memories (``kv_in_dim=64`` is hard-coded, so the
    memory encoder outputs 64 channels) and splits object pointers into 64-channel pieces, which
    only works for a width that is a multiple of 64 larger than 64 (at 64 the pointers keep an
    extra dimension and ``torch.cat`` fails); the FPN keeps SAM 3's four scales, because the
    tracker needs three levels (stride 4, 8 and 16 relative to the patch grid); and the memory
    is short (3 mask memories, 4 object pointers) so that the source's pruning of old tracker
    outputs is exercised within a 10-frame test video.

    Args:
        image_size: model input size; a multiple of 28 (an even number of 14-pixel patches, split
            into 2 × 2 attention windows), at least 56.

    Returns:
        A ``transformers.Sam3VideoConfig``.
    """
    from transformers import Sam3VideoConfig
    from transformers.models.sam3.configuration_sam3 import (
        Sam3Config,
        Sam3DETRDecoderConfig,
        Sam3DETREncoderConfig,
        Sam3GeometryEncoderConfig,
        Sam3MaskDecoderConfig,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )
    from transformers.models.sam3_tracker_video.configuration_sam3_tracker_video import (
        Sam3TrackerVideoConfig,
        Sam3TrackerVideoMaskDecoderConfig,
        Sam3TrackerVideoPromptEncoderConfig,
    )

    if image_size < 56 or image_size % (2 * _PATCH):
        raise ValueError(f"tiny SAM 3 image_size must be a multiple of {2 * _PATCH} and >= 56, got {image_size}")
    grid = image_size // _PATCH
    width = 128
    vocab = tiny_clip_vocab()
    backbone = Sam3ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=_PATCH,
        window_size=grid // 2,
        global_attn_indexes=[1],
        pretrain_image_size=image_size,
    )
    vision = Sam3VisionConfig(
        backbone_config=backbone,
        fpn_hidden_size=width,
        backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
    )
    text = {
        "vocab_size": 1000,
        "hidden_size": 32,
        "intermediate_size": 64,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": MAX_PROMPT_TOKENS,
        "hidden_act": "gelu",
        # The CLIP text model pools at the end-of-text token: its id in the tiny vocabulary.
        "bos_token_id": vocab[_CLIP_BOS],
        "eos_token_id": vocab[_CLIP_EOS],
        "pad_token_id": vocab[_CLIP_EOS],
    }
    layer = {"hidden_size": width, "num_layers": 1, "num_attention_heads": 4, "intermediate_size": width}
    detector = Sam3Config(
        vision_config=vision,
        text_config=text,
        geometry_encoder_config=Sam3GeometryEncoderConfig(**layer),
        detr_encoder_config=Sam3DETREncoderConfig(**layer),
        detr_decoder_config=Sam3DETRDecoderConfig(**layer, num_queries=8),
        mask_decoder_config=Sam3MaskDecoderConfig(hidden_size=width, num_upsampling_stages=2, num_attention_heads=4),
    )
    tracker = Sam3TrackerVideoConfig(
        vision_config=vision.to_dict(),
        prompt_encoder_config=Sam3TrackerVideoPromptEncoderConfig(
            hidden_size=width, image_size=image_size, patch_size=_PATCH
        ),
        mask_decoder_config=Sam3TrackerVideoMaskDecoderConfig(
            hidden_size=width, mlp_dim=width, num_attention_heads=4, iou_head_hidden_dim=32
        ),
        num_maskmem=3,
        max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=width,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=width,
        memory_encoder_hidden_size=width,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=width,
        memory_fuser_num_layers=1,
        memory_fuser_embed_dim=width,
        memory_fuser_intermediate_dim=64,
        image_size=image_size,
    )
    return Sam3VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=4 * grid)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level BPE alphabet: every byte → a printable unicode character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


#: Merges of the tiny tokenizer: a few, so that BPE merging itself is exercised ("red" → one token).
_TINY_MERGES: tuple[tuple[str, str], ...] = (("r", "e"), ("re", "d</w>"), ("c", "a"), ("ca", "r</w>"))


def tiny_clip_vocab() -> dict[str, int]:
    """The tiny tokenizer's vocabulary: the 256 byte-level characters, the same ending a word
    (``</w>``), the tokens of :data:`_TINY_MERGES`, then CLIP's start / end-of-text tokens."""
    alphabet = list(_bytes_to_unicode().values())
    tokens = [*alphabet, *(c + "</w>" for c in alphabet), *(a + b for a, b in _TINY_MERGES), _CLIP_BOS, _CLIP_EOS]
    return {token: i for i, token in enumerate(tokens)}


def tiny_clip_tokenizer() -> Any:
    """A CLIP BPE tokenizer (``transformers.CLIPTokenizer``) over :func:`tiny_clip_vocab`, built offline.

    It tokenizes any text (every byte has a token) the way CLIP's does: lowercased, split into
    words, ``</w>`` marking word ends, ``<|startoftext|>`` / ``<|endoftext|>`` around the text
    and as padding.
    """
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=tiny_clip_vocab(), merges=list(_TINY_MERGES))


def tiny_sam3_processor(image_size: int = TINY_IMAGE_SIZE) -> Any:
    """A ``Sam3VideoProcessor`` for the tiny model: SAM 3's preprocessing (resize to
    ``image_size``², mean / std 0.5) at the tiny size, and :func:`tiny_clip_tokenizer`."""
    from transformers import Sam3ImageProcessor, Sam3VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    size = {"height": image_size, "width": image_size}
    low_res = 4 * (image_size // _PATCH)
    image_processor = Sam3ImageProcessor(size=size, mask_size={"height": low_res, "width": low_res})
    # The whole-video path (init_video_session(video=...)) uses this one: same normalisation.
    video_processor = Sam2VideoVideoProcessor(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return Sam3VideoProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tiny_clip_tokenizer(),
        target_size=image_size,
    )


def write_tiny_sam3(folder: Path, seed: int = 0, image_size: int = TINY_IMAGE_SIZE) -> Path:
    """Writes a random-weight tiny SAM 3 checkpoint folder in transformers' real format.

    ``model.save_pretrained`` (config.json + model.safetensors) and the processor's
    ``save_pretrained`` (processor_config.json, tokenizer.json, tokenizer_config.json): the
    folder loads like a downloaded ``facebook/sam3``.

    Args:
        folder: where to write (created if absent).
        seed: seed of the random weights (the global RNG is left as it was).
        image_size: see :func:`tiny_sam3_config`.

    Returns:
        ``folder``.
    """
    from transformers import Sam3VideoModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_sam3_config(image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3VideoModel(config).eval()
    with no_transformers_progress_bars():
        model.save_pretrained(folder)
    tiny_sam3_processor(image_size).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------ folder checks


def _model_type(config_path: Path) -> str | None:
    try:
        data = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"SAM 3 checkpoint {config_path} is not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"SAM 3 checkpoint {config_path} holds {type(data).__name__}, not a config object")
    model_type = data.get("model_type")
    return model_type if isinstance(model_type, str) else None


def _weights_file(folder: Path) -> Path | None:
    """The weights file ``from_pretrained`` would read, or None; a sharded index whose shards are
    not all there is an error."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise ValueError(f"SAM 3 checkpoint {path} is not a readable shard index ({err})") from err
            missing = [shard for shard in shards if not (folder / shard).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"SAM 3 checkpoint folder {folder}: {name} lists {len(shards)} weight shards but "
                    f"{len(missing)} are missing ({missing[:3]}); the download is incomplete.\n{download_hint(folder)}"
                )
        return path
    return None


def check_sam3_folder(folder: str | Path) -> Path:
    """Checks that ``folder`` is a complete SAM 3 video checkpoint folder, before anything is loaded.

    Args:
        folder: the local checkpoint folder.

    Returns:
        The folder, resolved.

    Raises:
        FileNotFoundError: the folder, its config.json, its weights or its processor / tokenizer
            files are missing (the message names the folder, what is missing and how to get it).
        NotADirectoryError: ``folder`` is a file.
        ValueError: config.json is unreadable or of another model type than ``sam3_video``.
    """
    path = Path(folder).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"SAM 3 checkpoint folder {path} does not exist.\n{download_hint(path)}")
    if not path.is_dir():
        raise NotADirectoryError(
            f"SAM 3 checkpoint {path} is a file; pass the checkpoint folder (holding config.json, the weights and "
            f"the processor files), not one file in it.\n{download_hint(path.parent)}"
        )
    path = path.resolve()
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"SAM 3 checkpoint folder {path} has no config.json: it is not a transformers checkpoint folder."
            f"\n{download_hint(path)}"
        )
    model_type = _model_type(config)
    if model_type != SAM3_MODEL_TYPE:
        held = f"model_type {model_type!r}" if model_type is not None else "no model_type"
        raise ValueError(
            f"SAM 3 checkpoint folder {path}: config.json holds {held}, but {SAM3_MODEL_TYPE!r} (the SAM 3 video "
            f"model: detector + tracker) is expected; this is the checkpoint of another model.\n{download_hint(path)}"
        )
    if _weights_file(path) is None:
        raise FileNotFoundError(
            f"SAM 3 checkpoint folder {path} has config.json but no weights (none of {', '.join(WEIGHT_FILES)}).\n"
            f"{download_hint(path)}"
        )
    missing = []
    if not any((path / name).is_file() for name in IMAGE_PROCESSOR_FILES):
        missing.append(f"the processor config ({' or '.join(IMAGE_PROCESSOR_FILES)})")
    if not (path / "tokenizer.json").is_file() and not (
        (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    ):
        missing.append("the tokenizer (tokenizer.json, or vocab.json + merges.txt)")
    if missing:
        raise FileNotFoundError(
            f"SAM 3 checkpoint folder {path} has the model but not {' nor '.join(missing)}: the processor cannot "
            f"be loaded.\n{download_hint(path)}"
        )
    return path


def _file_fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    with path.open("rb") as fh:
        head = hashlib.sha256(fh.read(1 << 20)).hexdigest()
    return {"name": path.name, "size": stat.st_size, "mtime": int(stat.st_mtime), "sha256_first_mib": head}


def checkpoint_identity(folder: str | Path) -> dict[str, Any]:
    """What identifies a checkpoint folder's output: its path, the SHA-256 of every config /
    processor / tokenizer file (:data:`CONFIG_FILES`, in full: they are small and set
    thresholds, sizes and tokenization), and each weights file's size, mtime and SHA-256 of its
    first MiB (as :func:`vssam2.masklets.sam2_video.checkpoint_fingerprint` does for SAM2).
    A missing folder gives ``{"path": ..., "missing": True}``."""
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        return {"path": str(path), "missing": True}
    configs = {
        name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in CONFIG_FILES if (path / name).is_file()
    }
    weights_file = _weights_file(path)
    weights = []
    if weights_file is not None:
        names = [weights_file.name]
        if weights_file.name.endswith(".index.json"):
            names += sorted(set(json.loads(weights_file.read_text())["weight_map"].values()))
        weights = [_file_fingerprint(path / name) for name in names]
    return {"path": str(path), "configs": configs, "weights": weights}


# ------------------------------------------------------------------------- private transformers API

#: (where, attribute) pairs the SAM 3 source uses beyond transformers' documented calls.
_MODEL_ATTRIBUTES: tuple[str, ...] = (
    "detector_model",
    "tracker_model",
    "tracker_neck",
    "score_threshold_detection",
    "new_det_thresh",
    "det_nms_thresh",
    "max_num_objects",
    "fill_hole_area",
)
_SESSION_ATTRIBUTES: tuple[str, ...] = (
    "processed_frames",
    "output_dict_per_obj",
    "obj_id_to_prompt_id",
    "prompts",
    "prompt_embeddings",
    "prompt_input_ids",
    "prompt_attention_masks",
    "obj_id_to_tracker_score_frame_wise",
    "suppressed_obj_ids",
    "hotstart_removed_obj_ids",
    "video_height",
    "video_width",
)


def check_sam3_private_api(model: Any, session: Any) -> None:
    """Fails at once, naming every missing attribute, if this transformers lacks a part of SAM 3
    the source relies on (instead of an AttributeError deep inside a video).

    Args:
        model: a ``Sam3VideoModel``.
        session: a ``Sam3VideoInferenceSession`` (from ``processor.init_video_session()``).

    Raises:
        RuntimeError: listing the missing names and the tested transformers version.
    """
    import transformers
    from transformers.models.sam3_video import modeling_sam3_video

    missing = [f"Sam3VideoModel.{name}" for name in _MODEL_ATTRIBUTES if not hasattr(model, name)]
    missing += [f"Sam3VideoInferenceSession.{name}" for name in _SESSION_ATTRIBUTES if not hasattr(session, name)]
    for name in ("get_text_features", "get_vision_features", "vision_encoder"):
        if not hasattr(getattr(model, "detector_model", None), name):
            missing.append(f"Sam3Model.{name}")
    for name in ("num_maskmem", "max_object_pointers_in_encoder"):
        if not hasattr(getattr(getattr(model, "tracker_model", None), "config", None), name):
            missing.append(f"Sam3TrackerVideoConfig.{name}")
    if not hasattr(modeling_sam3_video, "cv_utils_kernel"):
        missing.append("transformers.models.sam3_video.modeling_sam3_video.cv_utils_kernel")
    if missing:
        raise RuntimeError(
            f"transformers {transformers.__version__} lacks parts of SAM 3 that vssam2's SAM 3 source uses "
            f"(tested with {TESTED_TRANSFORMERS_VERSION}): {', '.join(missing)}"
        )


# ---------------------------------------------------------------------------- local post-processing


class LocalCvUtils:
    """The two functions transformers' SAM 3 would fetch from the hub kernel ``kernels-community/cv-utils``."""

    @staticmethod
    def generic_nms(
        ious: torch.Tensor, scores: torch.Tensor, iou_threshold: float, use_iou_matrix: bool = True
    ) -> torch.Tensor:
        """Greedy NMS on a precomputed IoU matrix.

        Args:
            ious: (N, N) float pairwise IoU.
            scores: (N,) float scores.
            iou_threshold: a detection is dropped when its IoU with a kept, higher-scored one is
                above this.
            use_iou_matrix: must be True (the only mode transformers calls).

        Returns:
            (K,) int64 indices of the kept detections, by decreasing score (ties: lower index first).
        """
        if not use_iou_matrix:
            # The stand-in serves the one mode transformers' SAM 3 calls; any other is a misuse.
            raise ValueError("LocalCvUtils.generic_nms takes an IoU matrix (use_iou_matrix=True), as SAM 3 calls it")
        # A few hundred detections at most: a CPU loop beats a device sync per step.
        ious_cpu = ious.detach().float().cpu()
        order = torch.sort(-scores.detach().float().cpu(), stable=True).indices
        suppressed = torch.zeros(len(order), dtype=torch.bool)
        kept = []
        for i in order.tolist():
            if suppressed[i]:
                continue
            kept.append(i)
            suppressed |= ious_cpu[i] > iou_threshold
        return torch.tensor(kept, dtype=torch.int64, device=scores.device)

    @staticmethod
    def cc_2d(mask: torch.Tensor, get_counts: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """8-connected components of binary masks.

        Args:
            mask: (N, 1, H, W) uint8, nonzero = foreground.
            get_counts: must be True (the only mode transformers calls).

        Returns:
            ``(labels, counts)``, both (N, 1, H, W) int32 on ``mask``'s device: per pixel, its
            component's label (1…, 0 = background) and its component's area (0 on background).
        """
        from scipy import ndimage

        if not get_counts:
            raise ValueError("LocalCvUtils.cc_2d returns labels and counts (get_counts=True), as SAM 3 calls it")
        masks = mask.detach().cpu().numpy() != 0  # (N, 1, H, W)
        labels = np.zeros(masks.shape, np.int32)
        counts = np.zeros(masks.shape, np.int32)
        structure = np.ones((3, 3), bool)  # 8-connectivity, as cc_torch
        for n in range(masks.shape[0]):
            label, num = ndimage.label(masks[n, 0], structure=structure)
            area = np.bincount(label.ravel(), minlength=num + 1).astype(np.int32)
            area[0] = 0
            labels[n, 0] = label
            counts[n, 0] = area[label]
        return torch.from_numpy(labels).to(mask.device), torch.from_numpy(counts).to(mask.device)


class _DropMessages(logging.Filter):
    """Drops transformers' per-frame warnings that a source's own settings make expected."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def use_local_cv_utils() -> None:
    """Makes transformers' SAM 3 use :class:`LocalCvUtils` (no hub fetch, same masks on every
    machine) and silences its warning of reaching ``max_num_objects``, which a source's
    ``max_objects`` makes expected on every frame once reached."""
    from transformers.models.sam3_video import modeling_sam3_video

    if not isinstance(modeling_sam3_video.cv_utils_kernel, LocalCvUtils):
        modeling_sam3_video.cv_utils_kernel = LocalCvUtils()
    logger = logging.getLogger(modeling_sam3_video.__name__)
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages(("hitting self.max_num_objects",)))


# ------------------------------------------------------------------------------------------ loading


def torch_dtype(dtype: Sam3Dtype | None) -> torch.dtype:
    """``"float32"`` / ``"bfloat16"`` (None: float32) as a torch dtype."""
    if dtype is None:
        return torch.float32
    if dtype not in SAM3_DTYPES:
        raise ValueError(f"dtype must be one of {SAM3_DTYPES} or None, got {dtype!r}")
    return torch.float32 if dtype == "float32" else torch.bfloat16


def load_sam3(
    folder: str | Path,
    device: str | torch.device = "cpu",
    dtype: Sam3Dtype | None = None,
) -> tuple[Any, Any]:
    """Loads a SAM 3 video model and its processor from a local checkpoint folder.

    Args:
        folder: the checkpoint folder (see the module docstring for how to get it); checked by
            :func:`check_sam3_folder` first. Read with ``local_files_only=True``.
        device: device of the model.
        dtype: ``"float32"`` (None: the default; use it on CPU) or ``"bfloat16"`` (on CUDA: about
            half the memory and time; masks differ slightly from float32).

    Returns:
        ``(model, processor)``: a ``transformers.Sam3VideoModel`` in eval mode on ``device`` and
        its ``transformers.Sam3VideoProcessor``.

    Raises:
        FileNotFoundError, NotADirectoryError, ValueError: see :func:`check_sam3_folder`; also a
            ValueError naming the folder when transformers cannot read it.
        RuntimeError: see :func:`check_sam3_private_api`.
    """
    from transformers import Sam3VideoModel, Sam3VideoProcessor

    path = check_sam3_folder(folder)
    torch_type = torch_dtype(dtype)
    try:
        processor = Sam3VideoProcessor.from_pretrained(path, local_files_only=True)
    except Exception as err:  # transformers raises OSError, ValueError, KeyError, ... on bad files
        raise ValueError(
            f"SAM 3 checkpoint folder {path}: the processor / tokenizer files cannot be loaded "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}).\n{download_hint(path)}"
        ) from err
    try:
        with no_transformers_progress_bars():
            model = Sam3VideoModel.from_pretrained(path, local_files_only=True, dtype=torch_type)
    except Exception as err:
        raise ValueError(
            f"SAM 3 checkpoint folder {path}: the model cannot be loaded "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}).\n{download_hint(path)}"
        ) from err
    model = model.to(device).eval()
    check_sam3_private_api(model, processor.init_video_session(inference_device=device, dtype=torch_type))
    use_local_cv_utils()
    return model, processor
