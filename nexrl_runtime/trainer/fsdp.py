"""A trainer rank group: N processes, one torch.distributed process group, the policy sharded with
FSDP2 (`fully_shard` per transformer block, then the root).

Every rank holds the whole Batch (it is small next to the model) and runs the same `train_step`:
the same advantages, the same mini-batches in the same order, the same epochs. Inside a mini-batch
each rank trains on its share of the rows, split by tokens (`split_by_tokens`), and every loss is
normalised by the GLOBAL mini-batch's counts (`LossNorm` of the whole mini-batch: token-mean over
all ranks' tokens, seq means over all ranks' sequences), so the gradients the ranks SUM (divide
factor 1) are exactly the one-process gradient. Grad clipping sees the full gradient (the DTensor
norm is a global reduction). Metrics are summed over ranks, which is what their global
normalisation makes right.

FSDP2 runs collectives in every forward/backward, so all ranks run the same number of
micro-batches: a rank with fewer rows runs masked-out ones (loss 0, gradient 0).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from nexrl_runtime.checkpoint import atomic_torch_save
from nexrl_runtime.config.schema import FSDPConfig, TrainerConfig
from nexrl_runtime.trainer.base import LossNorm, Trainer
from nexrl_runtime.trainer.collate import TensorBatch


@dataclass
class RankGroup:
    """This process's place in the trainer's process group, and the 1-D device mesh FSDP2 shards over."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    mesh: Any  # torch.distributed.device_mesh.DeviceMesh

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def init(
        cls,
        rank: int | None = None,
        world_size: int | None = None,
        master: str | None = None,
        device: str = "auto",
        timeout_s: float = 600.0,
    ) -> RankGroup:
        """Join (or create) the default process group: torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK,
        MASTER_ADDR/PORT) unless given; `master` is 'host:port'. NCCL on CUDA, gloo on CPU."""
        from datetime import timedelta

        from torch.distributed.device_mesh import init_device_mesh

        rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            kwargs: dict[str, Any] = {}
            if master is not None:
                kwargs["init_method"] = f"tcp://{master}"
            dist.init_process_group(
                backend="nccl" if dev.type == "cuda" else "gloo",
                rank=rank,
                world_size=world_size,
                timeout=timedelta(seconds=timeout_s),
                **kwargs,
            )
        mesh = init_device_mesh(dev.type, (world_size,))
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, mesh=mesh)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def max(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def broadcast_object(self, obj: Any = None) -> Any:
        """Rank 0's `obj` on every rank (pickled)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()


# --------------------------------------------------------------------------------------------- split


def split_by_tokens(lengths: Sequence[int], world_size: int) -> list[list[int]]:
    """Row indices per rank, balanced by tokens: longest rows first, each to the rank with the fewest
    tokens so far (then fewest rows, then lowest rank). Deterministic; each rank's rows keep their order."""
    shares: list[list[int]] = [[] for _ in range(world_size)]
    load = [(0, 0, r) for r in range(world_size)]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        tokens, rows, r = min(load)
        shares[r].append(i)
        load[r] = (tokens + int(lengths[i]), rows + 1, r)
    return [sorted(s) for s in shares]


def take(batch: TensorBatch, rows: Sequence[int]) -> TensorBatch:
    """`rows` of `batch` (any order), with all-padding columns trimmed off the right."""
    idx = torch.as_tensor(list(rows), dtype=torch.long)
    mask = batch.attention_mask.index_select(0, idx)
    width = max(int(mask.sum(-1).max().item()), 1) if len(idx) else 1

    def cut(v: Tensor) -> Tensor:
        v = v.index_select(0, idx)
        return v if v.dim() == 1 else v[:, :width]

    return TensorBatch(**{f.name: cut(getattr(batch, f.name)) for f in fields(batch)})


def masked_out(batch: TensorBatch) -> TensorBatch:
    """One row of `batch` with nothing trained on: a micro-batch that adds exactly 0 to loss and grads."""
    one = batch.slice(0, 1)
    return TensorBatch(
        input_ids=one.input_ids,
        attention_mask=one.attention_mask,
        loss_mask=torch.zeros_like(one.loss_mask),
        old_logprobs=torch.zeros_like(one.old_logprobs),
        advantages=torch.zeros_like(one.advantages),
    )


# ------------------------------------------------------------------------------------------ sharding


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks: HF's `_no_split_modules` classes, else the largest ModuleList's children."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    found = [m for m in model.modules() if type(m).__name__ in names]
    if found:
        return found
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def shard_model(model: torch.nn.Module, group: RankGroup, fsdp: FSDPConfig) -> torch.nn.Module:
    """FSDP2 in place: `fully_shard` each transformer block, then the root; gradients are SUMMED over
    ranks (the losses are already normalised by the global batch). Activation checkpointing, if
    asked, is applied to the blocks first (HF's non-reentrant gradient checkpointing when the
    model has it, else torch's checkpoint wrapper)."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    if isinstance(model, FSDPModule):
        return model
    model.to(group.device)
    # Every rank starts from rank 0's weights, whatever its own init gave.
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)
    if fsdp.activation_checkpointing and any(p.requires_grad for p in model.parameters()):
        if hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
                apply_activation_checkpointing,
            )

            kinds = tuple({type(b) for b in _blocks(model)})
            apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, kinds))
    mp = MixedPrecisionPolicy()
    if fsdp.mixed_precision == "bf16":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in _blocks(model):
        fully_shard(block, mesh=group.mesh, mp_policy=mp, reshard_after_forward=fsdp.reshard_after_forward)
    fully_shard(model, mesh=group.mesh, mp_policy=mp, reshard_after_forward=fsdp.reshard_after_forward)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)
    return model


def _full(t: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def iter_full_state(model: torch.nn.Module, main_only: bool = True) -> Iterator[tuple[str, Tensor | None]]:
    """(name, full CPU tensor) per entry of the sharded model's state dict, gathered one tensor at a
    time: at most one full tensor beyond the shards is alive on a rank. Collective: every rank must
    iterate it to the end; with `main_only` the other ranks get None instead of the tensor."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    for name, value in model.state_dict().items():
        full = _full(value.detach())
        yield name, (full.to("cpu", copy=True) if (rank == 0 or not main_only) else None)
        del full


# --------------------------------------------------------------------------------------------- trainer


class ShardedTrainer(Trainer):
    """Mixed in before a Trainer class (`sharded_class`): the same losses over a rank group.

    Built on the unsharded model (so GRPO's frozen reference is a plain copy), then the policy and the
    reference are sharded and the optimizer rebuilt over the sharded parameters.
    """

    ranks: RankGroup

    def __init__(
        self, model: torch.nn.Module, config: TrainerConfig, pad_token_id: int, ranks: RankGroup
    ) -> None:
        from torch.distributed.fsdp import FSDPModule

        shared_ref = None
        if isinstance(model, FSDPModule):
            # Another trainer already sharded this model (the training service: one model, many
            # losses); FSDP modules cannot be deep-copied, so a reference comes from `ranks`.
            shared_ref = getattr(ranks, "ref_model", None)
            if config.grpo.kl_coef > 0:
                super().__init__(
                    model,
                    config.model_copy(update={"grpo": config.grpo.model_copy(update={"kl_coef": 0.0})}),
                    pad_token_id,
                )
                self.config = config
            else:
                super().__init__(model, config, pad_token_id)
        else:
            super().__init__(model, config, pad_token_id)
        self.ranks = ranks
        shard_model(model, ranks, config.fsdp)
        ref = getattr(self, "ref_model", None)
        if ref is not None and shared_ref is None:
            shard_model(ref, ranks, config.fsdp)
            ranks.ref_model = ref  # type: ignore[attr-defined]
        elif shared_ref is not None and hasattr(self, "ref_model") and config.grpo.kl_coef > 0:
            self.ref_model = shared_ref
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.init_optimizer()

    def backward(self, mini: TensorBatch, norm: LossNorm | None = None) -> dict[str, float]:
        """This rank's share of `mini` (all ranks pass the same `mini`), normalised by the whole
        mini-batch (`norm`, default `mini`'s counts); leaves this rank's shard of the summed gradient
        and returns the mini-batch's metrics (summed over ranks)."""
        self.optimizer.zero_grad(set_to_none=True)
        norm = norm or LossNorm(num_tokens=mini.num_tokens, num_seqs=len(mini))
        lengths = mini.attention_mask.sum(-1).tolist()
        rows = split_by_tokens(lengths, self.ranks.world_size)
        mine = rows[self.ranks.rank]
        micro_size = self.config.micro_batch_size or max(max(len(r) for r in rows), 1)
        count = max(max(math.ceil(len(r) / micro_size) for r in rows), 1)  # same on every rank
        local = take(mini, mine) if mine else None
        totals: dict[str, Tensor] = {}
        for i in range(count):
            start = i * micro_size
            if local is not None and start < len(local):
                micro = local.slice(start, start + micro_size)
            else:
                micro = masked_out(mini)
            loss, metrics = self.compute_loss(micro.to(self.device), norm)
            loss.backward()
            for key, value in {"loss": loss, **metrics}.items():
                totals[key] = totals.get(key, 0) + value.detach()
        keys = sorted(totals)
        summed = self.ranks.sum(torch.stack([totals[k].float() for k in keys]).tolist())
        return dict(zip(keys, summed, strict=True))

    def grad_norm(self, max_norm: float) -> float:
        """The norm of the full gradient (a DTensor norm: a reduction over ranks)."""
        return float(_full(torch.nn.utils.clip_grad_norm_(self.params, max_norm)))

    def sequence_logprobs(self, data: TensorBatch) -> Tensor:
        """As Trainer's, each rank on its token-balanced share of `data`'s rows (all ranks run the
        same number of micro-batches), then summed over ranks into the whole [B, T]. Collective."""
        rows = split_by_tokens(data.attention_mask.sum(-1).tolist(), self.ranks.world_size)
        mine = rows[self.ranks.rank]
        micro_size = self.config.micro_batch_size or max(max(len(r) for r in rows), 1)
        count = max(max(math.ceil(len(r) / micro_size) for r in rows), 1)
        out = torch.zeros(data.input_ids.shape, dtype=torch.float32, device=self.ranks.device)
        for i in range(count):
            chunk = mine[i * micro_size : (i + 1) * micro_size]
            logp = self.micro_logprobs(take(data, chunk) if chunk else masked_out(data)).float()
            if chunk:
                index = torch.as_tensor(chunk, device=out.device)
                out[index, : logp.shape[1]] = logp.to(out.device)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.cpu()

    def state_dict(self) -> dict[str, Tensor]:
        """The full policy on rank 0 (CPU, one tensor gathered at a time), {} on the others. Collective."""
        out: dict[str, Tensor] = {}
        for name, tensor in iter_full_state(self.model):
            if tensor is not None:
                out[name] = tensor
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """`Trainer.save`'s file (full model + full optimizer state + step), gathered to rank 0's CPU
        and written there atomically. Collective."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = {
            "model": get_model_state_dict(self.model, options=opts),
            "optimizer": get_optimizer_state_dict(self.model, self.optimizer, options=opts),
            "scheduler": self.scheduler.state_dict(),
            "global_step": self.global_step,
        }
        if self.ranks.is_main:
            atomic_torch_save(state, path)
        self.ranks.barrier()

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restore what `save` wrote: rank 0 reads the file and broadcasts it. Collective."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        state: dict[str, Any] = {"model": {}, "optimizer": {}, "global_step": 0}
        if self.ranks.is_main:
            state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(self.model, state["model"], options=opts)
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=opts)
        rest = {k: v for k, v in state.items() if k not in ("model", "optimizer")}
        rest = self.ranks.broadcast_object(rest)
        self.load_scheduler(rest, os.fspath(path))
        self.global_step = int(rest["global_step"])


    def save_checkpoint(self, folder: str | os.PathLike[str]) -> int:
        """The trainer's part of a run checkpoint in DCP format (`dcp/` + `trainer.pt`), every rank
        writing its own shards; loadable on any rank count (trainer/dcp_checkpoint.py). Collective."""
        from nexrl_runtime.trainer import dcp_checkpoint

        return dcp_checkpoint.save_sharded(self, folder)

    def load_checkpoint(self, folder: str | os.PathLike[str]) -> int:
        """Restore a run checkpoint's trainer part, sharded (any rank count) or single-rank. Collective."""
        from nexrl_runtime.trainer import dcp_checkpoint

        if dcp_checkpoint.is_sharded_checkpoint(folder):
            return dcp_checkpoint.load_sharded(self, folder)
        return dcp_checkpoint.load_single_into_sharded(self, folder)


_CLASSES: dict[type[Trainer], type[ShardedTrainer]] = {}


def sharded_class(cls: type[Trainer]) -> type[ShardedTrainer]:
    """`cls` with ShardedTrainer's rank-group behaviour mixed in (cached per class)."""
    if issubclass(cls, ShardedTrainer):
        return cls
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Sharded{cls.__name__}", (ShardedTrainer, cls), {"__module__": cls.__module__})
    return _CLASSES[cls]


def build_sharded_trainer(
    cls: type[Trainer], model: torch.nn.Module, config: TrainerConfig, pad_token_id: int, ranks: RankGroup
) -> ShardedTrainer:
    return sharded_class(cls)(model, config, pad_token_id, ranks)


def load_full_state(module: torch.nn.Module, state: dict[str, Tensor], strict: bool = True) -> None:
    """Load a full (unsharded) state dict into `module`, sharded or not. Every rank passes the same
    full `state` and cuts its own shard out of it: no communication, so a refusal (a missing key, a
    wrong shape: RuntimeError) happens on every rank alike."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(module, FSDPModule):
        module.load_state_dict(state, strict=strict)
        return
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong or (strict and (missing or unexpected)):
        raise RuntimeError(
            f"state dict does not fit: missing {missing}, unexpected {unexpected}, shapes {wrong}"
        )
    with torch.no_grad():
        for key, target in own.items():
            if key not in state:
                continue
            full = state[key].to(device=target.device, dtype=target.dtype)
            if isinstance(target, DTensor):
                full = distribute_tensor(
                    full, target.device_mesh, target.placements, src_data_rank=None
                ).to_local()
                target = target.to_local()
            target.copy_(full)
