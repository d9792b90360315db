"""Weight sync: policy versions, pushes to the inference engines, and the staleness bound.

Every push increments the version. A trajectory sampled at version v is `lag = current - v`
versions old; it may be trained on only while `lag <= staleness` (0 in `sync` mode). Over-stale
trajectories are dropped or re-rolled by the caller, and counted here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import torch

from nexrl_runtime.config.schema import WeightSyncConfig
from nexrl_runtime.inference.base import InferenceEngine


def version_lag(current: int, sampled: int) -> int:
    return current - sampled


def is_stale(current: int, sampled: int, bound: int) -> bool:
    return version_lag(current, sampled) > bound


def may_start_batch(batch_index: int, steps_done: int, mode: str, bound: int) -> bool:
    """Whether rollout of data batch `batch_index` (0-based) may start after `steps_done` steps.

    `sync`: only once every earlier batch is trained and pushed; `batch-async`: at most `bound`
    batches ahead of training; `fully-async`: never waits for a step, only for memory: at most
    `bound + 1` batches ahead, so the newest of them can go one version over the bound and is then
    dropped or re-rolled by the consumer.
    """
    if mode == "sync":
        return steps_done >= batch_index
    if mode == "batch-async":
        return steps_done >= batch_index - bound
    return steps_done >= batch_index - bound - 1


class WeightSync:
    """Pushes trainer weights to every engine, versioned, and keeps the staleness counters."""

    def __init__(self, config: WeightSyncConfig, engines: list[InferenceEngine], version: int = 0):
        self.config = config
        self.engines = engines
        self.version = version
        self.steps_done = 0
        self.pushes = 0
        self.dropped_stale = 0
        self.rerolled_stale = 0
        self.push_seconds = 0.0
        self._cond = threading.Condition()

    @property
    def bound(self) -> int:
        return 0 if self.config.mode == "sync" else self.config.staleness

    def should_push(self, step: int) -> bool:
        return step % self.config.push_every == 0

    def push(self, state_dict: Mapping[str, torch.Tensor]) -> float:
        """Load the weights into every engine under the next version; return the seconds taken."""
        start = time.perf_counter()
        new_version = self.version + 1
        for engine in self.engines:
            engine.load_weights(state_dict, new_version)
        with self._cond:
            self.version = new_version
            self.pushes += 1
            self._cond.notify_all()
        took = time.perf_counter() - start
        self.push_seconds += took
        return took

    def step_done(self, steps: int) -> None:
        """Record that `steps` train steps are finished (and pushed, where due): opens the gate."""
        with self._cond:
            self.steps_done = steps
            self._cond.notify_all()

    def is_stale(self, sampled_version: int) -> bool:
        return is_stale(self.version, sampled_version, self.bound)

    def record_stale(self, count: int) -> None:
        if self.config.on_stale == "drop":
            self.dropped_stale += count
        else:
            self.rerolled_stale += count

    def wait_until(
        self, batch_index: int, timeout: float | None, stop: threading.Event | None = None
    ) -> bool:
        """Block until rollout of `batch_index` may start under the mode's rule; False on timeout/stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not may_start_batch(batch_index, self.steps_done, self.config.mode, self.bound):
                if stop is not None and stop.is_set():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)  # woken by step_done(), push() or wake()
            return True

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def stats(self) -> dict[str, float]:
        return {
            "policy_version": self.version,
            "weight_pushes": self.pushes,
            "dropped_stale": self.dropped_stale,
            "rerolled_stale": self.rerolled_stale,
        }
