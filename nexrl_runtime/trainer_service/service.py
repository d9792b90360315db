"""TrainerService: the model, optimizer and loss code behind the HTTP API, with no HTTP in it.

The losses are the in-process trainers themselves (GRPOTrainer, SFTTrainer, ...): forward_backward
collates the datums exactly as they do and calls their `backward`; optim_step is their clip+step.
One lock serialises every call, so requests never interleave on the model.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError

from nexrl_runtime.config.schema import TrainerConfig
from nexrl_runtime.trainer import GRPOTrainer, LossNorm, Trainer, collate
from nexrl_runtime.trainer.fsdp import RankGroup, build_sharded_trainer, load_full_state
from nexrl_runtime.trainer_service import storage
from nexrl_runtime.trainer_service.api import (
    ForwardBackwardRequest,
    ForwardBackwardResponse,
    Health,
    LoadedResponse,
    LogprobsRequest,
    LogprobsResponse,
    OptimStepResponse,
    SavedResponse,
    datums_to_trajectories,
    finite_or_none,
)
from nexrl_runtime.types import Trajectory


class ServiceError(Exception):
    """A request the service refuses; `status` is the HTTP status the API answers with."""

    status = 400


class BadRequest(ServiceError):
    status = 400


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


def _max_length(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


class TrainerService:
    """Owns one policy and its optimizer; `losses` maps loss names to Trainer classes.

    `root` holds `checkpoints/<name>.pt` (Trainer.save: atomic) and `weights/<name>/` (for samplers).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainerConfig,
        pad_token_id: int,
        losses: Mapping[str, type[Trainer]],
        root: str | Path,
        ranks: RankGroup | None = None,
    ) -> None:
        if config.type not in losses:
            raise ValueError(f"trainer.type {config.type!r} is not among the losses {sorted(losses)}")
        self.model = model
        self.config = config
        self.pad_token_id = pad_token_id
        self.ranks = ranks
        self.is_main = ranks is None or ranks.is_main
        if ranks is None:
            self.trainers = {name: cls(model, config, pad_token_id) for name, cls in losses.items()}
        else:  # every loss on the one sharded policy; the first trainer shards it (primary first)
            order = [config.type, *(name for name in losses if name != config.type)]
            built = {
                name: build_sharded_trainer(losses[name], model, config, pad_token_id, ranks)
                for name in order
            }
            self.trainers = {name: built[name] for name in losses}
        self.primary = self.trainers[config.type]
        for trainer in self.trainers.values():
            # one optimizer and lr schedule, whichever loss made the gradient
            trainer.optimizer, trainer.scheduler = self.primary.optimizer, self.primary.scheduler
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        self.max_length = _max_length(model)
        self.root = Path(root)
        self.checkpoint_dir = self.root / "checkpoints"
        self.weights_dir = self.root / "weights"
        for folder in (self.checkpoint_dir, self.weights_dir):
            folder.mkdir(parents=True, exist_ok=True)
            storage.remove_temp_entries(folder)  # left by a writer killed mid-save
        self.pending = False
        self.lock = threading.Lock()

    @property
    def step(self) -> int:
        return self.primary.global_step

    @property
    def reference(self) -> torch.nn.Module | None:
        grpo = next((t for t in self.trainers.values() if isinstance(t, GRPOTrainer)), None)
        return None if grpo is None else grpo.ref_model

    def health(self) -> Health:
        with self.lock:
            return Health(
                step=self.step,
                pending_gradient=self.pending,
                losses=sorted(self.trainers),
                has_reference=self.reference is not None,
                optim=self.config.optim,
                lr_schedule=self.config.lr_schedule,
                grpo=self.config.grpo,
                vocab_size=self.vocab_size,
                max_length=self.max_length,
                device=str(self.primary.device),
            )

    def _check_tokens(self, sequences: list[list[int]]) -> None:
        top = max(max(s) for s in sequences)
        if top >= self.vocab_size:
            raise BadRequest(f"token id {top} is out of range: the vocabulary has {self.vocab_size} ids")
        longest = max(len(s) for s in sequences)
        if self.max_length is not None and longest > self.max_length:
            raise BadRequest(f"a sequence has {longest} tokens; the model takes at most {self.max_length}")

    def _trainer_for(self, req: ForwardBackwardRequest) -> Trainer:
        trainer = self.trainers.get(req.loss)
        if trainer is None:
            raise BadRequest(f"unknown loss {req.loss!r}; this service has {sorted(self.trainers)}")
        config = self.config
        if req.loss_config is not None:
            config = config.model_copy(update={"grpo": req.loss_config})
        if isinstance(trainer, GRPOTrainer) and config.grpo.kl_coef > 0 and trainer.ref_model is None:
            raise BadRequest(
                "loss_config.kl_coef > 0 needs a reference model; start the service with "
                "trainer.grpo.kl_coef > 0 so it keeps one"
            )
        trainer.config = config
        return trainer

    def forward_backward(self, req: ForwardBackwardRequest) -> ForwardBackwardResponse:
        with self.lock:
            trainer = self._trainer_for(req)
            if not req.datums:
                if req.norm is None:
                    raise BadRequest("no datums and no norm: nothing to compute")
                for p in trainer.params:  # what a mini-batch of zero-advantage datums gives in-process
                    p.grad = torch.zeros_like(p)
                self.pending = True
                return ForwardBackwardResponse(metrics={"loss": 0.0}, num_datums=0, num_tokens=0)
            self._check_tokens([d.tokens for d in req.datums])
            advantages = [d.advantage for d in req.datums]
            data = collate(datums_to_trajectories(req.datums), self.pad_token_id, advantages)
            norm = None
            if req.norm is not None:
                if req.norm.num_tokens < data.num_tokens or req.norm.num_seqs < len(data):
                    raise BadRequest(
                        f"norm ({req.norm.num_tokens} tokens, {req.norm.num_seqs} seqs) is smaller than "
                        f"the datums ({data.num_tokens} trained-on tokens, {len(data)} seqs)"
                    )
                norm = LossNorm(num_tokens=req.norm.num_tokens, num_seqs=req.norm.num_seqs)
            self.model.train()
            self.pending = False  # backward zeroes the old gradient first
            metrics = trainer.backward(data, norm)
            self.pending = True
            return ForwardBackwardResponse(
                metrics=finite_or_none(metrics), num_datums=len(data), num_tokens=data.num_tokens
            )

    def optim_step(self) -> OptimStepResponse:
        with self.lock:
            if not self.pending:
                raise Conflict(
                    "no gradient to apply: call forward_backward first (a restart, a checkpoint load "
                    "or a weights upload clears it)"
                )
            # the in-process trainer's own clip + step (+ lr schedule step)
            grad_norm, lr = self.primary._clip_and_step()
            self.pending = False
            self.primary.global_step += 1
            finite = math.isfinite(grad_norm)
            return OptimStepResponse(
                step=self.step, grad_norm=grad_norm if finite else None, skipped=not finite, lr=lr
            )

    def compute_logprobs(self, req: LogprobsRequest) -> LogprobsResponse:
        with self.lock:
            self._check_tokens(req.sequences)
            trajs = [Trajectory(s, [0] * len(s), [0.0] * len(s), 0.0, "", "", 0) for s in req.sequences]
            # the trainer's own recompute: eval mode, no grad, its micro-batches (and ranks)
            logp = self.primary.sequence_logprobs(collate(trajs, self.pad_token_id))
            return LogprobsResponse(
                logprobs=[logp[i, : len(s)].tolist() for i, s in enumerate(req.sequences)]
            )

    def weights_bytes(self) -> tuple[bytes, int]:
        """The policy as safetensors bytes, and the step they are from."""
        with self.lock:
            state = self.primary.state_dict()  # sharded: gathered to rank 0 (collective)
            return (storage.to_bytes(state) if self.is_main else b""), self.step

    def load_weights_bytes(self, data: bytes) -> int:
        """Replace the policy's weights; before the first step the GRPO reference follows them
        (the reference is the policy training starts from). Clears any pending gradient."""
        try:
            state = storage.from_bytes(data)
        except SafetensorError as err:
            raise BadRequest(f"the body is not a safetensors file: {err}") from err
        with self.lock:
            try:
                load_full_state(self.model, state, strict=True)
            except (RuntimeError, KeyError, ValueError) as err:
                raise BadRequest(f"weights do not fit the model: {err}") from err
            if self.step == 0 and self.reference is not None:
                load_full_state(self.reference, state, strict=True)
            self.primary.optimizer.zero_grad(set_to_none=True)
            self.pending = False
            return len(state)

    def save_weights(self, name: str) -> SavedResponse:
        """`weights/<name>/model.safetensors` + config.json, appearing atomically, for a sampler."""
        with self.lock:
            start = time.perf_counter()
            dst = self.weights_dir / name
            config = getattr(self.model, "config", None)
            state = self.primary.state_dict()  # sharded: gathered to rank 0 (collective)
            if not self.is_main:
                return SavedResponse(path=str(dst), bytes=0, seconds=0.0, step=self.step)
            try:
                size = storage.write_weights_folder(
                    state, dst, config.to_dict() if config is not None else None
                )
            except FileExistsError as err:
                raise Conflict(str(err)) from err
            return SavedResponse(
                path=str(dst), bytes=size, seconds=time.perf_counter() - start, step=self.step
            )

    def save_checkpoint(self, name: str) -> SavedResponse:
        with self.lock:
            start = time.perf_counter()
            path = self.checkpoint_dir / f"{name}.pt"
            self.primary.save(path)  # sharded: gathered, rank 0 writes (collective)
            return SavedResponse(
                path=str(path),
                bytes=path.stat().st_size if self.is_main else 0,
                seconds=time.perf_counter() - start,
                step=self.step,
            )

    def load_checkpoint(self, name: str) -> LoadedResponse:
        with self.lock:
            path = self.checkpoint_dir / f"{name}.pt"
            if self.is_main and not path.is_file():  # sharded: only rank 0 reads it
                raise NotFound(f"no checkpoint {name!r} (looked for {path})")
            self.primary.load(path)
            self.primary.optimizer.zero_grad(set_to_none=True)
            self.pending = False
            return LoadedResponse(path=str(path), step=self.step)
