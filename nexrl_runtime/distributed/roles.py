"""What runs inside the actors: one ModuleHost per colocation-group actor, hosting its roles'
modules and routing `call(role, method, ...)` to them; a rollout worker uses a colocated engine
in-process, else a RemoteEngine (a named engine actor)."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
import torch

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.data.loader import Item
from nexrl_runtime.distributed.layout import GroupPlan, serves_over_http
from nexrl_runtime.distributed.weights import PackedState, pack, unpack
from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams
from nexrl_runtime.inference.factory import client_engine, weight_pusher
from nexrl_runtime.inference.local import LocalEngine
from nexrl_runtime.inference.openai_client import OpenAIEngine, WeightPusher
from nexrl_runtime.models import build_policy, build_tokenizer
from nexrl_runtime.registry import resolve_class
from nexrl_runtime.rollout.evaluator import Evaluator
from nexrl_runtime.rollout.worker import WORKERS, RolloutWorker
from nexrl_runtime.trainer import TRAINERS, Trainer
from nexrl_runtime.trainer.fsdp import RankGroup, build_sharded_trainer
from nexrl_runtime.types import Batch, Trajectory

Route = tuple[int, list[str]]
"""(policy version, replica URLs serving it): what the driver sends with each HTTP rollout call."""
PENDING_URL = "http://replicas.pending.invalid"
"""Where an HTTP worker points until its first rollout call names the replicas."""


class RemoteEngine(InferenceEngine):
    """An engine living in another actor, found by name (so a restarted actor is found again)."""

    def __init__(self, actor_name: str, namespace: str) -> None:
        self.actor_name = actor_name
        self.namespace = namespace
        self._handle: Any = None

    def _actor(self) -> Any:
        if self._handle is None:
            self._handle = ray.get_actor(self.actor_name, namespace=self.namespace)
        return self._handle

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        try:
            return ray.get(self._actor().call.remote("engine", "generate", prompts, params))
        except ray.exceptions.RayActorError:
            self._handle = None  # the driver restarts it; the retried call looks the name up again
            raise

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        raise NotImplementedError("weights reach engines from the driver's EngineGroup")


class EngineRole:
    """An in-process engine whose weights arrive packed from the object store."""

    def __init__(self, config: NexRLConfig, rank: int, weights: PackedState, version: int) -> None:
        model, tok = build_policy(config.model)
        model.load_state_dict(unpack(weights))
        self.engine = LocalEngine(model, tok.pad_token_id, tok.eos_token_id, config.seed + rank)
        self.engine.policy_version = version

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        return self.engine.generate(prompts, params)

    def load_weights(self, weights: PackedState, version: int) -> int:
        self.engine.load_weights(unpack(weights), version)
        return version

    def rng_states(self) -> list[torch.Tensor]:
        return self.engine.rng_states()

    def set_rng_states(self, states: list[torch.Tensor]) -> None:
        self.engine.set_rng_states(states)


class WorkerRole:
    """A rollout worker (also the validator's role); returns timings with the trajectories."""

    def __init__(self, config: NexRLConfig, engine: InferenceEngine) -> None:
        base = config.recipe_dir
        evaluator = resolve_class(config.rollout.evaluator, {}, Evaluator, base)()
        worker_cls = resolve_class(config.rollout.worker, WORKERS, RolloutWorker, base)
        tokenizer = build_tokenizer(config.model)
        self.worker = worker_cls(engine, tokenizer, evaluator, config.rollout, config.run_name)

    def rollout(self, items: list[Item], greedy: bool = False, route: Route | None = None
                ) -> tuple[list[Trajectory], dict[str, float]]:
        """`route` (HTTP inference): the replicas serving the driver's current version, and that
        version, which labels these completions (never newer than the weights that made them)."""
        if route is not None:
            version, urls = route
            engine = self.worker.engine
            assert isinstance(engine, OpenAIEngine), "a route is sent only to HTTP engines"
            engine.use(urls, version)
        trajs = self.worker.rollout(items, greedy)
        return trajs, self.worker.pop_timings()


class TrainerRole:
    """The trainer, built by `start` from the driver's weights (after any warm start). With several
    ranks, actor `rank` is one FSDP2 rank of the group, and every call is a collective: the driver
    makes it on all ranks at once; rank 0's answer is the trainer's."""

    def __init__(self, config: NexRLConfig, rank: int = 0) -> None:
        self.config, self.rank = config, rank
        self.trainer: Trainer | None = None
        self.pusher: WeightPusher | None = None

    def rendezvous(self) -> str:
        """'host:port' for the rank group's store: this actor's node address and a free port."""
        address = ray.util.get_node_ip_address()
        with socket.socket() as probe:
            probe.bind((address, 0))
            return f"{address}:{probe.getsockname()[1]}"

    def start(self, weights: PackedState, world_size: int = 1, master: str | None = None) -> int:
        model, tok = build_policy(self.config.model)
        model.load_state_dict(unpack(weights))
        cls = resolve_class(self.config.trainer.type, TRAINERS, Trainer, self.config.recipe_dir)
        if world_size == 1:
            self.trainer = cls(model, self.config.trainer, tok.pad_token_id)
        else:
            ranks = RankGroup.init(rank=self.rank, world_size=world_size, master=master)
            self.trainer = build_sharded_trainer(cls, model, self.config.trainer, tok.pad_token_id, ranks)
        return self.trainer.global_step

    def place(self) -> tuple[int, int]:
        """(rank, world size) of this trainer's process group; (0, 1) for a single rank."""
        group = getattr(self._live(), "ranks", None)
        return (group.rank, group.world_size) if group is not None else (0, 1)

    def _live(self) -> Trainer:
        if self.trainer is None:
            raise RuntimeError("trainer actor used before start()")
        return self.trainer

    def train_step(self, batch: Batch) -> dict[str, float]:
        return self._live().train_step(batch)

    def push_weights(self, urls: list[str], version: int) -> dict[str, float]:
        """Push this trainer's weights straight to the inference replicas at `urls` (HTTP
        inference), over `inference.weight_sync`; returns the push's figures."""
        state = self._live().state_dict()  # a collective with several ranks: the full state on rank 0
        if self.rank != 0:
            return {}
        if self.pusher is None:
            self.pusher = weight_pusher(self.config.inference, urls, Path(self.config.output_dir))
            if self.pusher is None:
                raise ConfigError("inference.weight_sync: none cannot push new weights to the replicas")
        self.pusher.push(state, version, urls)
        return dict(getattr(self.pusher, "last", {}))

    def packed_state(self) -> PackedState:
        """Returned by value: Ray copies it into the object store once, engines read it from there."""
        return pack(self._live().state_dict())

    def save(self, path: str) -> int:
        """Write a checkpoint; returns the step it holds."""
        self._live().save(path)
        return self._live().global_step

    def load(self, path: str) -> int:
        self._live().load(path)
        return self._live().global_step

    def save_checkpoint(self, folder: str) -> int:
        """The trainer's files of a run checkpoint, written by this actor into `folder` (which the
        driver made: one file system for both, i.e. shared storage in a cluster)."""
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"the trainer actor (pid {os.getpid()}) cannot see checkpoint folder {folder}: "
                "checkpoint.dir must be on storage shared by the driver and the trainer's node"
            )
        return self._live().save_checkpoint(folder)

    def load_checkpoint(self, folder: str) -> int:
        return self._live().load_checkpoint(folder)

    def restore(self, path: str) -> int:
        """Load the checkpoint if this node sees it; the step it holds, or -1."""
        return self.load(path) if os.path.exists(path) else -1


class ModuleHost:
    """The actor class of every colocation group: builds its roles' modules, routes calls by role."""

    def __init__(
        self,
        config: NexRLConfig,
        plan: GroupPlan,
        index: int,
        engine_names: list[str],
        namespace: str,
        weights: PackedState | None,
        version: int,
    ) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        random.seed(config.seed + index)
        torch.manual_seed(config.seed + index)
        self.modules: dict[str, Any] = {}
        engine: InferenceEngine | None = None
        roles = plan.roles_of(index)
        if "engine" in roles:
            assert weights is not None, "engine actors start from the driver's weights"
            self.modules["engine"] = EngineRole(config, index, weights, version)
            engine = self.modules["engine"].engine
        if "trainer" in roles:
            self.modules["trainer"] = TrainerRole(config, rank=index)
        for role in ("rollout", "validator"):
            if role in roles:
                target = engine or self._engine_for(config, index, engine_names, namespace)
                self.modules[role] = WorkerRole(config, target)

    @staticmethod
    def _engine_for(config: NexRLConfig, index: int, engine_names: list[str], namespace: str
                    ) -> InferenceEngine:
        """A worker's engine when none is colocated: its own HTTP client of the replicas (each
        rollout call names them), else a named engine actor."""
        if serves_over_http(config):
            return client_engine(config.inference, [PENDING_URL])
        return RemoteEngine(engine_names[index % len(engine_names)], namespace)

    def call(self, role: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.modules[role], method)(*args, **kwargs)

    def ready(self) -> int:
        return os.getpid()
