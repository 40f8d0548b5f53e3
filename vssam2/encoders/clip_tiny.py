"""``python -m vssam2.encoders.clip_tiny --write-tiny DIR [--kind clip|siglip]``: a tiny random-weight
CLIP / SigLIP folder in transformers' format (the demo's I-CLIP; its classes are meaningless)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from vssam2.encoders.clip import CLIP_MODEL_TYPES, check_clip_folder, write_tiny_clip


def main(args: Sequence[str] | None = None) -> Path:
    """Writes the folder unless a complete one is there (a rewrite would change its cache keys)."""
    parser = argparse.ArgumentParser(prog="python -m vssam2.encoders.clip_tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--write-tiny", required=True, type=Path, help="folder to write")
    parser.add_argument("--kind", choices=CLIP_MODEL_TYPES, default="clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rewrite a complete folder")
    parsed = parser.parse_args(args)
    try:
        check_clip_folder(parsed.write_tiny)
        complete = not parsed.force
    except (FileNotFoundError, ValueError):
        complete = False
    if not complete:
        write_tiny_clip(parsed.write_tiny, parsed.kind, parsed.seed)
    print(f"tiny random-weight {parsed.kind} checkpoint: {parsed.write_tiny}" + (" (exists)" if complete else ""))
    return parsed.write_tiny


if __name__ == "__main__":
    main()
