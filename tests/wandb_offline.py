"""Reading an offline W&B run back from disk: the records of its ``.wandb`` transaction log.

wandb 0.31 writes an offline run's config, summary and history only into ``run-<id>.wandb``
(``files/`` holds media and requirements.txt), so tests parse that log: a leveldb log
(github.com/google/leveldb doc/log_format.md) behind W&B's file header, 32 KiB blocks of chunks
(CRC-32 of type byte + data, length, type), each protobuf ``Record`` split over FIRST / MIDDLE /
LAST chunks where it crosses a block.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
BLOCK = 32768
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list[bytes]:
    """The serialized records of a ``.wandb`` file, in the order they were written."""
    raw = path.read_bytes()
    assert raw[: len(HEADER)] == HEADER, f"{path}: not a W&B transaction log"
    records, pending, index = [], b"", len(HEADER)
    while index + CHUNK_HEADER <= len(raw):
        left = BLOCK - index % BLOCK
        if left < CHUNK_HEADER:  # zero trailer: the next chunk starts at the next block
            index += left
            continue
        checksum, length, kind = struct.unpack("<IHB", raw[index : index + CHUNK_HEADER])
        if kind == 0 and length == 0:  # preallocated, never written
            break
        data = raw[index + CHUNK_HEADER : index + CHUNK_HEADER + length]
        assert checksum == zlib.crc32(data, zlib.crc32(bytes([kind]))), f"{path}: bad checksum at {index}"
        index += CHUNK_HEADER + length
        if kind == FULL:
            records.append(data)
        elif kind == FIRST:
            pending = data
        elif kind == MIDDLE:
            pending += data
        elif kind == LAST:
            records.append(pending + data)
        else:
            raise AssertionError(f"{path}: unknown chunk type {kind} at {index}")
    return records


def _apply(target: dict[str, Any], update: Any) -> None:
    for item in update.update:
        path = list(item.nested_key) or [item.key]
        node = target
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = json.loads(item.value_json)
    for item in update.remove:
        path = list(item.nested_key) or [item.key]
        node = target
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)


@dataclass
class OfflineRun:
    """What an offline run holds.

    Attributes:
        folder: the ``offline-run-*`` folder.
        name, group, job_type: the run's identity.
        config: the run config W&B would sync (the run record's, then every update in order).
        summary: the summary (every summary update in order).
        history: one dict per ``log`` call.
    """

    folder: Path
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def read_offline_run(folder: Path) -> OfflineRun:
    """Parses the ``run-*.wandb`` log of one offline run folder."""
    from wandb.proto import wandb_internal_pb2

    (log,) = folder.glob("run-*.wandb")
    run = OfflineRun(folder)
    for data in wandb_records(log):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.name, run.group, run.job_type = record.run.display_name, record.run.run_group, record.run.job_type
            _apply(run.config, record.run.config)
            _apply(run.summary, record.run.summary)
        elif kind == "config":
            _apply(run.config, record.config)
        elif kind == "summary":
            _apply(run.summary, record.summary)
        elif kind == "history":
            step: dict[str, Any] = {}
            for item in record.history.item:
                key = "/".join(item.nested_key) if item.nested_key else item.key
                step[key] = json.loads(item.value_json)
            run.history.append(step)
    return run


def offline_runs(wandb_dir: Path) -> list[OfflineRun]:
    """Every offline run under a ``wandb/`` folder (folder order: runs started in the same second
    are not in creation order; tell them apart by name)."""
    return [read_offline_run(folder) for folder in sorted(wandb_dir.glob("offline-run-*"))]
