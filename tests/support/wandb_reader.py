"""Reads the history rows of an offline W&B run (`run-<id>.wandb`) without a W&B server or account.

The file is W&B's record log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
records, each `<crc32:u32><length:u16><type:u8><payload>` (type 1 full, 2 first, 3 middle, 4 last
chunk), the payloads being `wandb_internal_pb2.Record` protobufs. A test double: only tests read it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[bytes]:
    """The record payloads of a .wandb file, chunks joined."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B record log (header {data[:4]!r})")
    out: list[bytes] = []
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the rest of the block is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zero padding at a block's or the file's end
            pos += left
            continue
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            out.append(payload)
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            out.append(pending + payload)
            pending = b""
    return out


def history(run_dir: Path) -> list[dict[str, Any]]:
    """Every `run.log` row of the offline run in `run_dir`, with its `_step`."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    rows = []
    for raw in records(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            row = {"_".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item}
            rows.append(row)
    return rows
