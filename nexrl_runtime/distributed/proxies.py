"""Driver-side stand-ins with the local interfaces, so the controller loop runs unchanged on Ray:
RayWorkerProxy (a RolloutWorker), EngineGroup (the InferenceEngine WeightSync pushes to) and
RayTrainerProxy (a TrainerLike whose state_dict is a StateRef into the object store)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
import torch

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.data.loader import Item
from nexrl_runtime.distributed.roles import Route
from nexrl_runtime.distributed.runtime import Host, RayRuntime
from nexrl_runtime.distributed.weights import pack, unpack
from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams
from nexrl_runtime.rollout.worker import RolloutWorker
from nexrl_runtime.types import Batch, Trajectory


class StateRef(Mapping[str, torch.Tensor]):
    """The trainer actors' weights, left where they are: `ref` puts them in the object store (for
    engine actors; every rank takes part in the gather, rank 0's is the state), an HTTP push asks the
    trainer to push them itself; reading them fetches them."""

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts = hosts
        self._ref: ray.ObjectRef | None = None
        self._cache: dict[str, torch.Tensor] | None = None

    @property
    def ref(self) -> ray.ObjectRef:
        if self._ref is None:
            refs = [h.call("trainer", "packed_state") for h in self.hosts]  # all ranks gather
            self._ref = refs[0]
        return self._ref

    def _tensors(self) -> dict[str, torch.Tensor]:
        if self._cache is None:
            self._cache = unpack(ray.get(self.ref))
        return self._cache

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._tensors()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors())

    def __len__(self) -> int:
        return len(self._tensors())


class RayWorkerProxy(RolloutWorker):
    """A rollout (or validator) actor's worker, for the manager and validator: `rollout` and
    `pop_timings` as locally; prompt building and scoring happen in the actor."""

    def __init__(self, runtime: RayRuntime, host: Host, role: str = "rollout",
                 route: Callable[[], Route] | None = None) -> None:
        self.runtime, self.host, self.role, self.route = runtime, host, role, route
        self._timings: dict[str, float] = {}

    def rollout(self, items: list[Item], greedy: bool = False) -> list[Trajectory]:
        if not items:
            return []
        route = () if self.route is None else (self.route(),)  # HTTP inference: replicas + version
        trajs, timings = self.runtime.get(self.host, self.role, "rollout", items, greedy, *route)
        for key, value in timings.items():
            self._add_time(key, value)
        return trajs


class EngineGroup(InferenceEngine):
    """All engine actors as one engine: a push puts the weights in the object store once (or
    passes the trainer's StateRef on) and every engine reads them from there."""

    def __init__(self, runtime: RayRuntime) -> None:
        self.runtime = runtime
        self.policy_version = 0
        self.push_seconds: list[float] = []

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        start = time.perf_counter()
        ref = state_dict.ref if isinstance(state_dict, StateRef) else ray.put(pack(state_dict))
        self.runtime.push(ref, version)
        self.policy_version = version
        self.push_seconds.append(time.perf_counter() - start)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        host = self.runtime.role_hosts("engine")[0]
        return self.runtime.get(host, "engine", "generate", prompts, params)

    def rng_states(self) -> list[torch.Tensor]:
        """Every engine actor's generator, in host order."""
        return [
            state
            for host in self.runtime.role_hosts("engine")
            for state in self.runtime.get(host, "engine", "rng_states")
        ]

    def set_rng_states(self, states: list[torch.Tensor]) -> None:
        hosts = self.runtime.role_hosts("engine")
        if len(states) != len(hosts):
            raise ConfigError(
                f"ray.engine_replicas / rollout.num_workers: the checkpoint has {len(states)} engine "
                f"generators, this run {len(hosts)} engine actors; resume with the same layout"
            )
        for host, state in zip(hosts, states, strict=True):
            self.runtime.get(host, "engine", "set_rng_states", [state])

    def stats(self) -> dict[str, float]:
        n = len(self.push_seconds)
        return {
            "ray_pushes": float(n),
            "ray_push_seconds_mean": sum(self.push_seconds) / n if n else 0.0,
            "ray_push_mbytes": self.runtime.state_bytes / 1e6,
        }


class RayTrainerProxy:
    """The trainer actors (a TrainerLike): one, or one per FSDP2 rank, each call made on all ranks
    at once and rank 0's answer returned. On a death the runtime applies ray.trainer_failure; with
    restart-from-checkpoint (one rank) the step is retried on the restored trainer."""

    def __init__(self, runtime: RayRuntime, config: NexRLConfig, state_dict: Mapping[str, torch.Tensor]):
        self.runtime = runtime
        self.hosts = runtime.role_hosts("trainer")
        self.checkpoint_every = config.ray.checkpoint_every
        self.keep_checkpoints = config.ray.trainer_failure == "restart-from-checkpoint"
        runtime.trainer_start = ray.put(pack(state_dict))
        ranks = len(self.hosts)
        master = self.runtime.get(self.hosts[0], "trainer", "rendezvous") if ranks > 1 else None
        self.global_step = self._call("start", runtime.trainer_start, ranks, master)

    def _call(self, method: str, *args: object) -> Any:
        if len(self.hosts) == 1:
            return self.runtime.get(self.hosts[0], "trainer", method, *args)
        return self.runtime.get_all(self.hosts, "trainer", method, *args)[0]

    def train_step(self, batch: Batch) -> dict[str, float]:
        metrics = self._call("train_step", ray.put(batch) if len(self.hosts) > 1 else batch)
        self.global_step += 1
        if self.keep_checkpoints and self.global_step % self.checkpoint_every == 0:
            self.save(self.runtime.checkpoint)
        return metrics

    def state_dict(self) -> StateRef:
        """The weights, left in the actors: the driver never copies them."""
        return StateRef(self.hosts)

    def push_weights(self, urls: list[str], version: int) -> None:
        """The trainer pushes to the inference replicas itself (rank 0, after gathering)."""
        self._call("push_weights", urls, version)

    def save_checkpoint(self, folder: object) -> int:
        """The trainer's part of a run checkpoint, written by the actor (shared storage)."""
        return self._call("save_checkpoint", str(folder))

    def load_checkpoint(self, folder: object) -> int:
        """Restore a run checkpoint in the actor; a later trainer restart restores this state too."""
        self.global_step = self._call("load_checkpoint", str(folder))
        if self.keep_checkpoints:
            self.save(self.runtime.checkpoint)
        return self.global_step

    def save(self, path: object) -> None:
        step = self._call("save", str(path))
        if Path(str(path)) == self.runtime.checkpoint:
            self.runtime.checkpoint_step = step
