"""``python -m vssam2.masklets.sam3_tiny --write-tiny DIR``: a tiny random-weight SAM 3 checkpoint folder.

A module of its own (not imported by :mod:`vssam2.masklets`), so ``python -m`` runs it cleanly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vssam2.masklets.sam3_model import TINY_IMAGE_SIZE, check_sam3_folder, write_tiny_sam3


def main(args: Sequence[str] | None = None) -> Path:
    """``python -m vssam2.masklets.sam3_tiny --write-tiny DIR``: a tiny random-weight SAM 3 folder.

    The folder is in transformers' real format (config, safetensors, processor, tokenizer), so
    every loading and inference path runs on it; its masks are meaningless. The demo uses it.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vssam2.masklets.sam3_tiny", description=main.__doc__)
    parser.add_argument("--write-tiny", required=True, type=Path, help="folder to write the tiny checkpoint to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--image-size", type=int, default=TINY_IMAGE_SIZE, help="model input size (multiple of 28)")
    parser.add_argument("--force", action="store_true", help="rewrite a complete folder (its cache keys change)")
    parsed = parser.parse_args(args)
    folder = parsed.write_tiny
    try:
        check_sam3_folder(folder)
        complete = not parsed.force
    except (FileNotFoundError, NotADirectoryError, ValueError):
        complete = False
    if complete:  # kept: a rewrite would give its masklet caches new keys
        print(f"tiny random-weight SAM 3 checkpoint: {folder} (exists; --force rewrites it)")
        return folder
    write_tiny_sam3(folder, seed=parsed.seed, image_size=parsed.image_size)
    print(f"tiny random-weight SAM 3 checkpoint: {folder}")
    return folder


if __name__ == "__main__":
    main()
