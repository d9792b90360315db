"""RayController: the local controller loop with its modules in Ray actors.

The loop, the pool, the data loader and the weight-sync bookkeeping (versions, the staleness gate)
stay in the driver; engines, rollout workers, the validator and the trainer are actors (grouped as
`ray.colocate` says). Weights go trainer actor -> object store -> engine actors, never through
the driver.
"""

from __future__ import annotations

import sys
from typing import TextIO

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.controller import Controller, RunSummary
from nexrl_runtime.distributed.driver import connect
from nexrl_runtime.distributed.proxies import EngineGroup, RayTrainerProxy, RayWorkerProxy
from nexrl_runtime.distributed.runtime import RayRuntime
from nexrl_runtime.inference.base import InferenceEngine
from nexrl_runtime.rollout.worker import RolloutWorker
from nexrl_runtime.trainer.factory import TrainerLike


class RayController(Controller):
    """Connects to (or starts) Ray, creates the actors, runs the shared loop, then frees the actors."""

    launch_modes = ("ray",)

    def __init__(self, config: NexRLConfig, echo: TextIO | None = sys.stdout):
        engine = getattr(getattr(config, "inference", None), "engine", "local")
        if engine != "local":  # rather than silently serving in-process engines instead
            raise ConfigError(f"inference.engine: launch_mode=ray runs the in-process engine only today "
                              f"(inference.engine: local), not {engine!r}")
        connect(config)
        self.runtime: RayRuntime | None = None
        try:
            super().__init__(config, echo)
        except BaseException:
            self.close()
            raise
        validators = self._runtime.role_hosts("validator")
        if validators:
            self.validator = RayWorkerProxy(self._runtime, validators[0], "validator")

    @property
    def _runtime(self) -> RayRuntime:
        assert self.runtime is not None, "the Ray runtime is made by _build_engine"
        return self.runtime

    def _build_engine(self) -> InferenceEngine:
        """All actors start here, from the driver's initial weights (one object-store copy)."""
        with_validator = bool(self.cfg.validation.path)
        self.runtime = RayRuntime(self.cfg, self.model.state_dict(), with_validator)
        self.engine_group = EngineGroup(self.runtime)
        return self.engine_group

    def _build_workers(self, worker_cls: type[RolloutWorker]) -> list[RolloutWorker]:
        return [RayWorkerProxy(self._runtime, host) for host in self._runtime.role_hosts("rollout")]

    def _build_trainer(self) -> TrainerLike:
        if not self._runtime.role_hosts("trainer"):  # training-service mode: the service trains
            return super()._build_trainer()
        return RayTrainerProxy(self._runtime, self.cfg, self.model.state_dict())

    def run(self) -> RunSummary:
        try:
            summary = super().run()
            summary.stats.update(self._runtime.stats(), **self.engine_group.stats())
            return summary
        finally:
            self.close()

    def close(self) -> None:
        """Kill the actors and free the placement group; Ray itself stays up for this process."""
        if self.runtime is not None:
            self.runtime.close()
