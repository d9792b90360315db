"""launch_mode=ray with HTTP inference (`inference.engine: openai | vllm`): the driver's part.

Rollout actors call the replicas themselves. The driver finds them (ReplicaKeeper: DNS, health,
weight versions) and sends, with every rollout call, the replicas that serve the current version
and that version. A push goes from where the weights are: the trainer actor pushes its own (the
driver never copies them); weights the driver holds (a warm start, the training service's) go
from here. A replica that comes back behind is caught up before it is named to a worker again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.distributed.proxies import RayTrainerProxy, StateRef
from nexrl_runtime.distributed.roles import Route
from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams
from nexrl_runtime.inference.discovery import ReplicaKeeper, expand
from nexrl_runtime.inference.factory import start_vllm, weight_pusher
from nexrl_runtime.inference.openai_client import WeightPusher
from nexrl_runtime.inference.vllm_server import VLLMServer

log = logging.getLogger(__name__)


def check_replicas(config: NexRLConfig, keeper: ReplicaKeeper, found: list[str]) -> None:
    """The replica and GPU counts the operator wrote (`cluster.inference`) against what answers."""
    want = config.cluster.inference
    if want.replicas and len(found) != want.replicas:
        raise ConfigError(
            f"cluster.inference.replicas: the job has {want.replicas} inference replicas, but "
            f"{len(found)} answer behind {config.cluster.inference.base_urls}: {found}"
        )
    if want.gpus_per_replica:
        sizes = {url: keeper.world_size(url) for url in found}
        wrong = {url: n for url, n in sizes.items() if n != want.gpus_per_replica}
        if wrong:
            raise ConfigError(
                f"cluster.inference.gpus_per_replica: each replica should span {want.gpus_per_replica} "
                f"GPUs, but these report another world size: {wrong}"
            )


class ReplicaRoute(InferenceEngine):
    """The driver's engine for HTTP inference on Ray: pushes (routed to the trainer actor when it
    holds the weights) and the per-call route of the rollout actors. Generation is theirs."""

    def __init__(self, config: NexRLConfig, keeper: ReplicaKeeper, pusher: WeightPusher | None,
                 servers: list[VLLMServer]) -> None:
        self.config, self.keeper, self.pusher, self.servers = config, keeper, pusher, servers
        self.trainer: RayTrainerProxy | None = None  # set once the trainer actors exist
        self.push_seconds: list[float] = []
        self.partial_pushes = 0
        self.trainer_pushes = self.driver_pushes = 0
        self.closed = False
        keeper.catch_up = self._catch_up

    def route(self) -> Route:
        """(version, replicas serving it) for the next rollout call; while none serves (all
        restarting), wait for one, up to `inference.ready_timeout_s`."""
        with self.keeper.lock:
            if self.keeper.current():
                return self.policy_version, self.keeper.current()
        self.keeper.wait_for(1, self.config.inference.ready_timeout_s)
        return self.route()

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Push to every healthy replica; one that fails mid-push leaves the route until caught up."""
        start = time.perf_counter()
        with self.keeper.lock:
            targets = self.keeper.probe()
            if not targets:
                raise RuntimeError(f"no inference replica is healthy behind {self.keeper.urls}")
            try:
                self._push(state_dict, version, targets)
                reached = targets
            except Exception:
                reached = [u for u in targets if self.keeper.label(u) == str(version)]
                if not reached:
                    raise
                self.partial_pushes += 1
                log.warning("weight push %d reached %s of %s", version, reached, targets, exc_info=True)
            self.keeper.pushed_to(reached, version)
            self.policy_version = version
        self.push_seconds.append(time.perf_counter() - start)

    def _push(self, state_dict: Mapping[str, torch.Tensor], version: int, urls: list[str]) -> None:
        if isinstance(state_dict, StateRef) and self.trainer is not None:  # the trainer actors' weights
            self.trainer.push_weights(urls, version)
            self.trainer_pushes += 1
            return
        self.driver_pushes += 1
        if self.pusher is None:
            raise ConfigError("inference.weight_sync: none cannot push new weights to the replicas")
        self.pusher.push(state_dict, version, urls)

    def _catch_up(self, url: str, version: int) -> None:
        """A replica behind the current version (new or restarted): the disk route reloads the
        latest push's file, which is still in the weights folder."""
        reload: Callable[[str, int], None] | None = getattr(self.pusher, "reload", None)
        if reload is None:
            raise RuntimeError(
                f"inference replica {url} restarted and needs policy version {version}, but "
                f"inference.weight_sync={self.config.inference.weight_sync} cannot reach a new replica"
            )
        reload(url, version)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        raise RuntimeError("with HTTP inference on Ray the rollout actors generate, not the driver")

    def stats(self) -> dict[str, float]:
        n = len(self.push_seconds)
        return {
            "ray_pushes": float(n),
            "ray_push_seconds_mean": sum(self.push_seconds) / n if n else 0.0,
            "inference_replicas": float(len(self.keeper.current())),
            "replicas_caught_up": float(self.keeper.caught_up),
            "partial_pushes": float(self.partial_pushes),
            "trainer_pushes": float(self.trainer_pushes),
            "driver_pushes": float(self.driver_pushes),
        }

    def close(self) -> None:
        """Idempotent: the run closes its engine, and the controller again on its way out."""
        if self.closed:
            return
        self.closed = True
        try:
            self.keeper.close()
            if self.pusher is not None:
                self.pusher.close()
        finally:
            for server in self.servers:
                server.stop()


def replica_urls(config: NexRLConfig) -> list[str]:
    """The configured replica URLs (`engine: openai`), checked: a config error before Ray starts."""
    inf = config.inference
    urls = inf.base_urls or config.cluster.inference.base_urls
    if not urls:
        raise ConfigError(
            "inference.base_urls: inference.engine=openai needs the servers' URLs here "
            "(or in cluster.inference.base_urls)"
        )
    expand(urls, lambda host: [])  # every URL has a host name
    return list(urls)


def open_route(config: NexRLConfig) -> ReplicaRoute:
    """Start the servers (`engine: vllm`) or find them (`engine: openai`), wait until the expected
    number serve, check them against `cluster.inference`, and keep watching them."""
    inf = config.inference
    servers = start_vllm(config) if inf.engine == "vllm" else []
    try:
        urls = [s.base_url for s in servers] or replica_urls(config)
        keeper = ReplicaKeeper(urls)
        try:
            expected = inf.replicas if servers else config.cluster.inference.replicas
            found = keeper.wait_for(expected, inf.ready_timeout_s)
            check_replicas(config, keeper, found)
            pusher = weight_pusher(inf, found, Path(config.output_dir))
        except BaseException:
            keeper.close()
            raise
    except BaseException:
        for server in servers:
            server.stop()
        raise
    route = ReplicaRoute(config, keeper, pusher, servers)
    keeper.start(inf.refresh_s)
    log.info("inference replicas: %s", found)
    return route
