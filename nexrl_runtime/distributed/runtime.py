"""Driver side of the Ray layout: the group actors, their placement group, supervision and the
latest weights.

Supervision is ours (Ray's `max_restarts` is 0): a call that finds its actor (or an engine actor it
used) dead runs `heal()`, which pings every actor, replaces the dead ones (up to
`ray.max_restarts` each; a trainer per `ray.trainer_failure`) with the latest weights, and the
call is retried. A replaced actor keeps its name, so remote engines are found again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
import torch
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.distributed.layout import GroupPlan, actor_options, bundles, plan_groups
from nexrl_runtime.distributed.roles import ModuleHost
from nexrl_runtime.distributed.weights import pack

PING_TIMEOUT_S = 30.0
log = logging.getLogger(__name__)


class TrainerFailed(RuntimeError):
    """The trainer actor died and the error policy (ray.trainer_failure) says fail."""


def is_actor_death(err: BaseException) -> bool:
    """A dead actor, ours or one that the failed actor called (a remote engine)."""
    if isinstance(err, ray.exceptions.RayActorError):
        return True
    cause = getattr(err, "cause", None)
    return isinstance(err, ray.exceptions.RayTaskError) and isinstance(cause, ray.exceptions.RayActorError)


class Host:
    """One supervised group actor: its plan, index, stable name, current handle and restarts."""

    def __init__(self, plan: GroupPlan, index: int, name: str) -> None:
        self.plan, self.index, self.name = plan, index, name
        self.handle: Any = None
        self.restarts = 0
        self.pid = 0
        self.calls = 0

    def call(self, role: str, method: str, *args: Any) -> ray.ObjectRef:
        self.calls += 1
        return self.handle.call.remote(role, method, *args)


class RayRuntime:
    """Creates every group actor (GPU groups in one placement group), keeps them alive, closes them."""

    def __init__(self, config: NexRLConfig, state_dict: Mapping[str, torch.Tensor] | None,
                 with_validator: bool):
        """`state_dict`: the engine actors' first weights (None: no engine actors, HTTP inference)."""
        self.config = config
        self.plans = plan_groups(config, with_validator)
        self.namespace = ray.get_runtime_context().namespace
        self.run_tag = f"nexrl-{config.run_name}-{uuid.uuid4().hex[:8]}"
        packed = None if state_dict is None else pack(state_dict)
        self.state_bytes = 0 if packed is None else packed.nbytes
        self.latest: tuple[ray.ObjectRef | None, int] = (None if packed is None else ray.put(packed), 0)
        self.trainer_start: ray.ObjectRef | None = None
        self.checkpoint = Path(config.output_dir) / "ray_trainer_checkpoint.pt"
        self.checkpoint_step = 0  # the trainer step the checkpoint holds (0: none yet)
        self.restarts = {"rollout": 0, "engine": 0, "validator": 0, "trainer": 0}
        self.hung = dict.fromkeys(self.restarts, 0)
        self.closed = False
        self._lock = threading.Lock()
        self._remote = ray.remote(ModuleHost)
        self.pg, self._bundle_of = self._placement_group()
        self.hosts: dict[str, list[Host]] = {
            p.name: [Host(p, i, f"{self.run_tag}-{p.name}-{i}") for i in range(p.count)] for p in self.plans
        }
        try:
            for host in self.all_hosts():
                self._start(host)
            self._wait_ready(self.all_hosts())
        except BaseException:
            self.close()
            raise

    # -- layout ---------------------------------------------------------------------------------
    def _placement_group(self) -> tuple[PlacementGroup | None, dict[tuple[str, int], int]]:
        spec = bundles(self.config, self.plans)
        if not spec:
            return None, {}
        pg = placement_group([b for _, _, b in spec], strategy=self.config.ray.placement_strategy)
        try:
            ray.get(pg.ready(), timeout=self.config.ray.ready_timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(pg)
            raise RuntimeError(
                f"Ray could not place GPU bundles {[b for _, _, b in spec]} within "
                f"{self.config.ray.ready_timeout_s:.0f}s; cluster has {ray.cluster_resources()}"
            ) from None
        return pg, {(group, i): k for k, (group, i, _) in enumerate(spec)}

    def all_hosts(self) -> list[Host]:
        return [h for hosts in self.hosts.values() for h in hosts]

    def role_hosts(self, role: str) -> list[Host]:
        return next((hosts for hosts in self.hosts.values() if role in hosts[0].plan.roles), [])

    def engine_names(self) -> list[str]:
        return [h.name for h in self.role_hosts("engine")]

    def _start(self, host: Host) -> None:
        options = actor_options(host.plan)
        key = (host.plan.name, host.index)
        if self.pg is not None and key in self._bundle_of:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.pg, placement_group_bundle_index=self._bundle_of[key]
            )
        elif host.plan.spread:
            options["scheduling_strategy"] = "SPREAD"
        weights, version = self.latest
        host.handle = self._remote.options(name=host.name, **options).remote(
            self.config, host.plan, host.index, self.engine_names(), self.namespace, weights, version
        )

    def _wait_ready(self, hosts: list[Host]) -> None:
        pids = ray.get([h.handle.ready.remote() for h in hosts], timeout=self.config.ray.ready_timeout_s)
        for host, pid in zip(hosts, pids, strict=True):
            host.pid = pid

    # -- supervision ----------------------------------------------------------------------------
    def heal(self) -> int:
        """Replace every dead actor; returns how many were replaced."""
        with self._lock:
            if self.closed:
                raise RuntimeError("the Ray runtime is closed")
            dead = [h for h in self.all_hosts() if not self._alive(h)]
            for host in dead:
                self._replace(host)
            return len(dead)

    def _alive(self, host: Host) -> bool:
        try:
            ray.get(host.handle.ready.remote(), timeout=PING_TIMEOUT_S)
            return True
        except ray.exceptions.GetTimeoutError:
            return True  # busy, not dead
        except ray.exceptions.RayActorError:
            return False

    def _replace(self, host: Host) -> None:
        roles = host.plan.roles_of(host.index)
        policy = self.config.ray.trainer_failure
        if "trainer" in roles and policy == "fail":
            raise TrainerFailed(f"trainer actor {host.name} died (ray.trainer_failure=fail)")
        if "trainer" not in roles and host.restarts >= self.config.ray.max_restarts:
            raise RuntimeError(f"actor {host.name} died again after {host.restarts} restarts")
        ray.kill(host.handle, no_restart=True)
        self._await_name_free(host.name)
        self._start(host)
        self._wait_ready([host])
        host.restarts += 1
        for role in roles:
            self.restarts[role] += 1
        if "trainer" in roles and self.trainer_start is not None:
            ray.get(host.call("trainer", "start", self.trainer_start))
            if self.checkpoint_step:
                step = ray.get(host.call("trainer", "restore", str(self.checkpoint)))
                if step != self.checkpoint_step:  # read on the new trainer's node, not the driver's
                    raise TrainerFailed(
                        f"the new trainer found step {step} at {self.checkpoint}, not "
                        f"{self.checkpoint_step}: restart-from-checkpoint needs output_dir on shared storage"
                    )

    def _await_name_free(self, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"Ray still lists dead actor {name} after {timeout:.0f}s")

    def get(self, host: Host, role: str, method: str, *args: Any) -> Any:
        """Call and wait; on an actor death, or a non-trainer actor silent past
        `ray.call_timeout_s` (killed as hung), heal and retry (bounded by the restart budget)."""
        timeout = None if role == "trainer" else self.config.ray.call_timeout_s
        for _ in range(self.config.ray.max_restarts + 2):
            try:
                return ray.get(host.call(role, method, *args), timeout=timeout)
            except ray.exceptions.GetTimeoutError:
                log.warning("actor %s (%s.%s) did not answer within %.0f s: replacing it as hung",
                            host.name, role, method, timeout)
                self.hung[role] += 1
                ray.kill(host.handle, no_restart=True)
                self.heal()
            except Exception as err:
                if not is_actor_death(err):
                    raise
                self.heal()
        raise RuntimeError(f"{role}.{method} on {host.name} kept failing on dead or hung actors")

    def get_all(self, hosts: list[Host], role: str, method: str, *args: Any) -> list[Any]:
        """Call every host at once and wait for all: a collective of the trainer's ranks. A dead
        rank fails the call at once (its peers would wait in the collective): heal() applies
        ray.trainer_failure, and the error is raised."""
        refs = [h.call(role, method, *args) for h in hosts]
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done[0])
        except Exception as err:
            if is_actor_death(err):
                self.heal()
            raise
        return ray.get(refs)

    # -- weights --------------------------------------------------------------------------------
    def push(self, weights: ray.ObjectRef, version: int) -> None:
        """Every engine loads `weights` from the object store, in parallel; an engine actor found
        dead is replaced, and starts with these weights."""
        self.latest = (weights, version)
        calls = [h.call("engine", "load_weights", weights, version) for h in self.role_hosts("engine")]
        dead = False
        for call in calls:
            try:
                ray.get(call)
            except Exception as err:
                if not is_actor_death(err):
                    raise
                dead = True
        if dead:
            self.heal()

    def stats(self) -> dict[str, float]:
        out = {f"restarts_{role}": float(n) for role, n in self.restarts.items()}
        out.update({f"hung_{role}": float(n) for role, n in self.hung.items() if role != "trainer"})
        out["ray_actor_calls"] = float(sum(h.calls for h in self.all_hosts()))
        return out

    def close(self) -> None:
        """Kill every actor and free the placement group (idempotent)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for host in self.all_hosts():
                if host.handle is not None:
                    ray.kill(host.handle, no_restart=True)
            if self.pg is not None:
                remove_placement_group(self.pg)
