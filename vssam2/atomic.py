"""The one way the project writes a file that a reader or a resumed run must never see half-done."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Writes ``path`` through ``write(tmp)`` under a temporary name in the same folder, then
    renames it into place (:func:`os.replace` is atomic on one filesystem), so the file either
    has its old content or the whole new one; an interrupted write leaves no temporary file.

    Args:
        path: the file to write.
        write: writes the content to the temporary path it is given.

    Returns:
        ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_png(path: str | Path, array: np.ndarray) -> Path:
    """Writes a 2-D integer array as a PNG atomically (uint8 → mode "L", uint16 → "I;16")."""
    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
