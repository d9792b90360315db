"""RayController: the local controller loop with its modules in Ray actors.

The loop, the pool, the data loader and the weight-sync bookkeeping (versions, the staleness gate)
stay in the driver; engines, rollout workers, the validator and the trainer are actors (grouped as
`ray.colocate` says). Weights go trainer actor -> object store -> engine actors, or, with HTTP
inference (no engine actors), trainer actor -> every replica (http_inference.py); never through
the driver.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.controller import Controller, RunSummary
from nexrl_runtime.distributed.driver import connect
from nexrl_runtime.distributed.http_inference import ReplicaRoute, open_route
from nexrl_runtime.distributed.layout import check_trainer_ranks, serves_over_http
from nexrl_runtime.distributed.proxies import EngineGroup, RayTrainerProxy, RayWorkerProxy
from nexrl_runtime.distributed.roles import Route
from nexrl_runtime.distributed.runtime import RayRuntime
from nexrl_runtime.inference.base import InferenceEngine
from nexrl_runtime.rollout.worker import RolloutWorker
from nexrl_runtime.trainer.factory import TrainerLike


class RayController(Controller):
    """Connects to (or starts) Ray, creates the actors, runs the shared loop, then frees the actors."""

    launch_modes = ("ray",)

    def __init__(self, config: NexRLConfig, echo: TextIO | None = sys.stdout):
        check_trainer_ranks(config)
        connect(config)
        self.runtime: RayRuntime | None = None
        self.engine_group: EngineGroup | ReplicaRoute | None = None
        try:
            super().__init__(config, echo)
        except BaseException:
            self.close()
            raise
        validators = self._runtime.role_hosts("validator")
        if validators:
            self.validator = RayWorkerProxy(self._runtime, validators[0], "validator", self._route())

    @property
    def _runtime(self) -> RayRuntime:
        assert self.runtime is not None, "the Ray runtime is made by _build_engine"
        return self.runtime

    def _build_engine(self) -> InferenceEngine:
        """All actors start here: engine actors from the driver's initial weights (one object-store
        copy); with HTTP inference the replicas are found (or started) first, and there are none."""
        with_validator = bool(self.cfg.validation.path)
        if not serves_over_http(self.cfg):
            self.runtime = RayRuntime(self.cfg, self.model.state_dict(), with_validator)
            self.engine_group = EngineGroup(self.runtime)
            return self.engine_group
        route = self.engine_group = open_route(self.cfg)
        self.runtime = RayRuntime(self.cfg, None, with_validator)
        return route

    def _route(self) -> Callable[[], Route] | None:
        return self.engine_group.route if isinstance(self.engine_group, ReplicaRoute) else None

    def _build_workers(self, worker_cls: type[RolloutWorker]) -> list[RolloutWorker]:
        hosts = self._runtime.role_hosts("rollout")
        return [RayWorkerProxy(self._runtime, host, route=self._route()) for host in hosts]

    def _build_trainer(self) -> TrainerLike:
        if not self._runtime.role_hosts("trainer"):  # training-service mode: the service trains
            return super()._build_trainer()
        trainer = RayTrainerProxy(self._runtime, self.cfg, self.model.state_dict())
        if isinstance(self.engine_group, ReplicaRoute):
            self.engine_group.trainer = trainer  # pushes of its weights: from the trainer actors
        return trainer

    def run(self) -> RunSummary:
        try:
            summary = super().run()
            assert self.engine_group is not None
            summary.stats.update(self._runtime.stats(), **self.engine_group.stats())
            return summary
        finally:
            self.close()

    def close(self) -> None:
        """Kill the actors and free the placement group (Ray itself stays up for this process);
        stop watching the replicas and any servers started here."""
        try:
            if self.runtime is not None:
                self.runtime.close()
        finally:
            if isinstance(self.engine_group, ReplicaRoute):
                self.engine_group.close()
