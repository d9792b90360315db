"""The sharded trainer's part of a run checkpoint, in torch.distributed.checkpoint (DCP) format, and
the readers that let any rank count load any trainer checkpoint.

Two on-disk formats live in a run checkpoint folder (nexrl_runtime/checkpoint.py makes it atomic):
* single-rank (`Trainer.save_checkpoint`): `model.safetensors`, `optimizer.pt` (+ `ref_model.safetensors`);
* sharded (`ShardedTrainer.save_checkpoint`): `dcp/` (DCP files: every rank writes its own shards
  of the policy, the optimizer state and the frozen reference; rank 0 the `.metadata`) and
  `trainer.pt` (lr scheduler, global step, the rank count that wrote it).
DCP reshards on load, so a `dcp/` folder loads on any number of ranks, one plain process included;
a single-rank folder loads on several ranks by rank 0 reading it and broadcasting (full state dict).
Every function here is collective when a process group is up: all ranks call it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

DCP_DIR = "dcp"
TRAINER_FILE = "trainer.pt"


class _Checkpointable(Protocol):
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    global_step: int

    def load_scheduler(self, state: dict[str, Any], where: str) -> None: ...


def is_sharded_checkpoint(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / DCP_DIR).is_dir()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _ref(trainer: _Checkpointable) -> torch.nn.Module | None:
    return getattr(trainer, "ref_model", None)


def _state(trainer: _Checkpointable) -> dict[str, Any]:
    """The DCP state dict of `trainer` (sharded DTensors on an FSDP model, plain tensors otherwise)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state: dict[str, Any] = {
        "model": get_model_state_dict(trainer.model),
        "optimizer": get_optimizer_state_dict(trainer.model, trainer.optimizer),
    }
    ref = _ref(trainer)
    if ref is not None:
        state["ref_model"] = get_model_state_dict(ref)
    return state


def save_sharded(trainer: _Checkpointable, folder: str | os.PathLike[str]) -> int:
    """Write `folder/dcp/` (every rank its shards) and `folder/trainer.pt` (rank 0); returns the step.
    All files are written when this returns on any rank (a barrier ends it)."""
    import torch.distributed.checkpoint as dcp

    folder = Path(folder)
    dcp.save(_state(trainer), checkpoint_id=str(folder / DCP_DIR))
    if _rank() == 0:
        world = dist.get_world_size() if dist.is_initialized() else 1
        rest = {"scheduler": trainer.scheduler.state_dict(), "global_step": trainer.global_step}
        torch.save({**rest, "world_size": world}, folder / TRAINER_FILE)
    _barrier()
    return trainer.global_step


def load_sharded(trainer: _Checkpointable, folder: str | os.PathLike[str]) -> int:
    """Restore what `save_sharded` wrote, on this trainer's rank count (DCP reshards); returns the step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    folder = Path(folder)
    state = _state(trainer)
    ref = _ref(trainer)
    reader = dcp.FileSystemReader(str(folder / DCP_DIR))
    has_ref = any(key.startswith("ref_model.") for key in reader.read_metadata().state_dict_metadata)
    if ref is not None and not has_ref:
        raise FileNotFoundError(f"{folder / DCP_DIR} has no ref_model for the KL reference")
    if ref is None:
        state.pop("ref_model", None)
    with warnings.catch_warnings():  # one plain process: DCP says it loads without a process group
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        dcp.load(state, storage_reader=reader)
    set_model_state_dict(trainer.model, state["model"])
    set_optimizer_state_dict(trainer.model, trainer.optimizer, state["optimizer"])
    if ref is not None:
        set_model_state_dict(ref, state["ref_model"])
    file = folder / TRAINER_FILE
    rest = torch.load(file, map_location="cpu", weights_only=True)
    trainer.load_scheduler(rest, str(file))
    trainer.global_step = int(rest["global_step"])
    return trainer.global_step


def _by_name(model: torch.nn.Module, optim_state: dict[str, Any]) -> dict[str, Any]:
    """A plain optimizer state dict (keyed by parameter index, in `self.params` order: the trainable
    parameters of `model`) re-keyed by parameter name, as get_optimizer_state_dict gives it."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    groups, index = [], 0
    lookup: dict[int, str] = {}
    for group in optim_state["param_groups"]:
        for pid in group["params"]:
            lookup[pid] = names[index]
            index += 1
        groups.append({**group, "params": [lookup[pid] for pid in group["params"]]})
    if index != len(names):
        raise ValueError(f"the optimizer state has {index} parameters, the model {len(names)} trainable ones")
    return {"state": {lookup[pid]: s for pid, s in optim_state["state"].items()}, "param_groups": groups}


def _with_tied(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` plus the names safetensors left out of it for sharing a tensor with another name (tied
    embeddings), filled from that other name."""
    by_param: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_param.setdefault(id(p), []).append(name)
    out = dict(state)
    for names in by_param.values():
        present = next((n for n in names if n in state), None)
        for name in names:
            if present is not None and name not in out:
                out[name] = state[present]
    return out


def load_single_into_sharded(trainer: _Checkpointable, folder: str | os.PathLike[str]) -> int:
    """Load a single-rank folder (model.safetensors, optimizer.pt, ref_model.safetensors) into a
    sharded trainer: rank 0 reads the files, the full state dicts are broadcast and cut into shards."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    folder = Path(folder)
    ref = _ref(trainer)
    main = _rank() == 0
    ref_file = folder / "ref_model.safetensors"
    if ref is not None and not ref_file.exists():
        raise FileNotFoundError(f"{folder} has no ref_model.safetensors for the KL reference")
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    model_state = _with_tied(trainer.model, load_file(folder / "model.safetensors")) if main else {}
    set_model_state_dict(trainer.model, model_state, options=opts)
    if ref is not None:
        set_model_state_dict(ref, _with_tied(ref, load_file(ref_file)) if main else {}, options=opts)
    file = folder / "optimizer.pt"
    rest = torch.load(file, map_location="cpu", weights_only=True)  # every rank: scheduler, step
    optim = _by_name(trainer.model, rest.pop("optimizer")) if main else {}
    set_optimizer_state_dict(trainer.model, trainer.optimizer, optim, options=opts)
    trainer.load_scheduler(rest, str(file))
    trainer.global_step = int(rest["global_step"])
    return trainer.global_step


def load_model_weights(model: torch.nn.Module, folder: str | os.PathLike[str]) -> None:
    """The policy weights of a checkpoint folder of either format into a plain `model` (export)."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_model

    folder = Path(folder)
    if is_sharded_checkpoint(folder):
        state = {"model": model.state_dict()}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
            dcp.load(state, checkpoint_id=str(folder / DCP_DIR))
        model.load_state_dict(state["model"])
    else:
        load_model(model, str(folder / "model.safetensors"))
