"""State dicts as numpy arrays, so the object store hands engines zero-copy read-only views.

Ray pickles torch tensors (a copy on every read) but maps numpy arrays straight from shared
memory. A push therefore costs one copy into the store and one copy into each engine's params.
bfloat16 has no numpy dtype: it travels as int16 bits and is viewed back.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PackedState:
    """A state dict as numpy arrays, with the torch dtypes that numpy cannot express."""

    arrays: dict[str, np.ndarray]
    bf16: frozenset[str]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def pack(state_dict: Mapping[str, torch.Tensor]) -> PackedState:
    """Numpy views of the (CPU) tensors: no copy here; `ray.put` makes the one copy."""
    arrays, bf16 = {}, set()
    for name, t in state_dict.items():
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            bf16.add(name)
            t = t.view(torch.int16)
        arrays[name] = t.numpy()
    return PackedState(arrays, frozenset(bf16))


def unpack(packed: PackedState) -> dict[str, torch.Tensor]:
    """Tensors over the packed arrays (read-only object-store memory: load them, never write them)."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": we only read
        for name, a in packed.arrays.items():
            t = torch.from_numpy(a)
            out[name] = t.view(torch.bfloat16) if name in packed.bf16 else t
    return out
