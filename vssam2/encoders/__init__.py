"""Frozen image encoders behind one interface: frames (B, H, W, 3) uint8 -> features (B, C, h, w).

- :class:`SAM2Encoder`: SAM2's image encoder (the paper's I-SAM2 features).
- :class:`SAM2LoRAEncoder`: SAM2's image encoder with trainable LoRA adapters (peft) on its
  Hiera trunk's attention (I-SAM2-LoRA); trained online, never cached.
- :class:`TimmEncoder`: any timm backbone, weights from a local file.
- :class:`MiTEncoder`: SegFormer's MiT-B0...B5 from mmseg checkpoints (CFFM, MRCFA, TV3S),
  the paper's I-CFFM features; :func:`mmseg_to_hf` is its key mapping.
- :class:`CLIPEncoder`: the image tower of a CLIP / SigLIP folder, dense text-aligned patch
  features (:func:`clip_text_embeddings` embeds class names in the same space).

Nothing downloads weights: checkpoints are local files, or None for a seeded random
initialisation (tests, demos). Importing this package imports only torch: each encoder
imports its library (sam2 and Hydra, timm, transformers: seconds each) when it is built.
"""

from vssam2.encoders.base import FrozenEncoder
from vssam2.encoders.clip import CLIPEncoder, clip_text_embeddings
from vssam2.encoders.mit import MiTEncoder, mmseg_to_hf
from vssam2.encoders.sam2 import SAM2Encoder
from vssam2.encoders.sam2_lora import SAM2LoRAEncoder
from vssam2.encoders.timm_backbone import TimmEncoder

__all__ = [
    "CLIPEncoder",
    "FrozenEncoder",
    "MiTEncoder",
    "SAM2Encoder",
    "SAM2LoRAEncoder",
    "TimmEncoder",
    "clip_text_embeddings",
    "mmseg_to_hf",
]
