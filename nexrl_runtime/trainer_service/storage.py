"""Weights on disk and on the wire: safetensors bytes, atomically written weight folders, and the
clean-up of temp files a killed writer leaves behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from safetensors.torch import save_file

WEIGHTS_FILE = "model.safetensors"
TEMP_SUFFIX = ".tmp"  # every temp entry is '.<name>.<random>.tmp' in the folder of its target


def plain_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, no two sharing storage (safetensors refuses shared storage, e.g. tied
    embeddings): every key is kept, so a strict load_state_dict of the result works."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in state.items():
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[key] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def to_bytes(state: Mapping[str, torch.Tensor]) -> bytes:
    return save_bytes(plain_tensors(state))


def from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    return load_bytes(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_weights_folder(
    state: Mapping[str, torch.Tensor], dst: Path, config: Mapping[str, Any] | None = None
) -> int:
    """Write `dst/model.safetensors` (+ `config.json`) so that `dst` appears complete or not at all:
    a temp folder beside it, fsynced, then renamed. Refuses an existing `dst`. Returns the bytes."""
    if dst.exists():
        raise FileExistsError(f"{dst} exists; write each version to a new folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=TEMP_SUFFIX))
    try:
        weights = tmp / WEIGHTS_FILE
        save_file(plain_tensors(state), weights, metadata={"format": "pt"})
        files = [weights]
        if config is not None:
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
            files.append(tmp / "config.json")
        for file in files:
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, dst)
        _fsync_dir(dst.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sum(f.stat().st_size for f in dst.iterdir())


def remove_temp_entries(folder: Path) -> list[Path]:
    """Delete what interrupted atomic writes left in `folder` (call only while nothing writes there)."""
    removed = []
    for entry in folder.glob(f".*{TEMP_SUFFIX}") if folder.is_dir() else []:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry)
    return removed
