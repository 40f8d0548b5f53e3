"""What the console shows: results, progress and warnings a user can act on, not dependency chatter.

The entry points (``train.py``, ``evaluate.py`` and every ``python -m vssam2.*`` command) call
:func:`quiet_dependency_chatter` once. It drops, and only drops:

- Lightning's product tips ("💡 Tip: ... litlogger / litmodels") and its "TPU available" /
  "HPU available" lines (the "GPU available, used" line stays: it says where the run ran);
- deprecation warnings that dependencies raise about each other (Lightning's use of torch's
  ``LeafSpec``, sam2's use of ``torch.jit.script``), which no vssam2 user can act on;
- Lightning's warning that an ``IterableDataset`` with ``__len__`` may be miscounted with
  several workers: our chunk streams split videos whole between workers and ``__len__`` is
  the exact total;
- Lightning's warning that modules are in eval mode when training starts: the frozen encoders
  of the masklet classifiers stay in eval mode on purpose (no dropout, fixed norm statistics).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

_DROPPED_PREFIXES = ("💡 Tip:", "TPU available:", "HPU available:")
_LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_DROPPED_PREFIXES)


_FILTER = _DropChatter()


def quiet_dependency_chatter() -> None:
    """Installs the filters above (idempotent)."""
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


@contextlib.contextmanager
def no_transformers_progress_bars() -> Iterator[None]:
    """Hides transformers' per-file "Loading weights" / "Writing model shards" bars for a block
    (one bar per small checkpoint is noise a user cannot act on), then restores the setting."""
    from transformers.utils import logging as hf_logging

    were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if were_on:
            hf_logging.enable_progress_bar()
