"""launch_mode=ray with HTTP inference, on a real local Ray against two real local servers that one
name resolves to (a headless Service's two pods): rollout actors balance over both, the trainer
actor pushes every version to both, a replica that restarts is caught up before it serves again,
and the replica and GPU counts the operator writes are checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nexrl_runtime.config import ConfigError
from nexrl_runtime.inference.vllm_weights import WEIGHTS_FILE
from tests.distributed.conftest import wait_for
from tests.distributed.replicas import ADDRESSES, Pods, http_config

ray = pytest.importorskip("ray")
from nexrl_runtime.distributed import RayController  # noqa: E402 - needs ray
from nexrl_runtime.distributed.http_inference import open_route  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_session")


def test_rollout_actors_use_both_replicas_and_the_trainer_pushes_every_version_to_each(
    tmp_path: Path, pods: Pods
) -> None:
    ctrl = RayController(pods.cfg, echo=None)
    assert ctrl._runtime.role_hosts("engine") == []  # no engine actors: the replicas generate
    assert len(ctrl._runtime.role_hosts("rollout")) == 2  # cluster.rollout_workers, not the recipe's 1
    summary = ctrl.run()
    assert summary.steps == 6 and summary.stats["weight_pushes"] == 6
    assert summary.stats["trainer_pushes"] == 6 and summary.stats["driver_pushes"] == 0
    assert all(pods.completions(i) > 0 for i in range(2)), "rollouts reached only one replica"
    assert [s.weight_version for s in pods.states] == ["6", "6"]
    reloads = [sum(p == "/collective_rpc" for _, p, _ in s.requests) for s in pods.states]
    assert reloads == [6, 6]
    pushed = load_file(str(tmp_path / "weights" / WEIGHTS_FILE))
    for state in pods.states:
        served = state.engine.model.state_dict()
        assert all(torch.equal(served[k], pushed[k]) for k in pushed)
    rows = [r for r in ctrl.tracker.history if r["phase"] == "rl" and r["step"] > 0]
    assert max(r["staleness_max"] for r in rows) <= 1


def test_a_restarted_replica_is_caught_up_before_it_serves_again(pods: Pods, monkeypatch) -> None:
    ctrl = RayController(pods.cfg, echo=None)
    keeper = ctrl.engine_group.keeper
    log = ctrl.tracker.log
    restarted_at: list[int] = []

    def log_then_restart(step: int, metrics: dict, phase: str = "rl") -> None:
        log(step, metrics, phase)
        if phase == "rl" and step == 2:
            pods.servers[1].stop()  # the pod dies (the driver notices within a refresh) ...
            gone = f"http://{ADDRESSES[1]}:{pods.port}"
            wait_for(lambda: gone not in keeper.current(), 10, "the keeper to drop the dead replica")
            pods.start(1, seed=99)  # ... and comes back with the base model
            restarted_at.append(len(pods.states[1].requests))
            # no push can happen while this step's log blocks the loop: only a catch-up brings it back
            wait_for(lambda: gone in keeper.current(), 10, "the restarted replica to serve again")

    monkeypatch.setattr(ctrl.tracker, "log", log_then_restart)
    summary = ctrl.run()
    assert summary.steps == 6 and restarted_at
    assert summary.stats["replicas_caught_up"] >= 1
    after = [p for _, p, _ in pods.states[1].requests]
    first_reload = after.index("/collective_rpc")
    assert "/v1/completions" not in after[:first_reload], "served before it had the current weights"
    assert pods.states[1].weight_version == "6" and pods.completions(1) > 0


def test_the_replica_and_gpu_counts_of_the_cluster_section_are_checked(pods: Pods) -> None:
    cfg = pods.cfg
    with pytest.raises(ConfigError, match=r"cluster.inference.replicas: the job has 1 inference replicas, b"):
        open_route(cfg.model_copy(update={"cluster": cfg.cluster.model_copy(
            update={"inference": cfg.cluster.inference.model_copy(update={"replicas": 1})})}))
    with pytest.raises(ConfigError, match=r"cluster.inference.gpus_per_replica: each replica should span 2"):
        open_route(cfg.model_copy(update={"cluster": cfg.cluster.model_copy(
            update={"inference": cfg.cluster.inference.model_copy(update={"gpus_per_replica": 2})})}))
    pods.servers[1].stop()
    slow = cfg.model_copy(update={"inference": cfg.inference.model_copy(update={"ready_timeout_s": 0.5})})
    with pytest.raises(TimeoutError, match="1 of 2 inference replicas ready"):
        open_route(slow)
    wait_for(lambda: not pods.servers[1].thread.is_alive(), 10, "the stopped server")


def test_training_service_on_ray_the_service_trains_and_its_weights_reach_both_replicas(
    tmp_path: Path, pods: Pods
) -> None:
    from tests.integration.test_trainer_service import max_gap, service

    with service(http_config(tmp_path / "service", pods.port, "seed=7")) as client:
        cfg = http_config(tmp_path / "run", pods.port, "mode=training-service", "total_steps=3",
                          "warm_start.steps=2", f"cluster.trainer.base_url={client.base_url}")
        ctrl = RayController(cfg, echo=None)
        assert ctrl._runtime.role_hosts("trainer") == []  # the service trains
        summary = ctrl.run()
        served = client.get_weights()
    # the warm start's weights (version 0), then one push per step, all from the driver
    assert summary.steps == 3 and summary.stats["driver_pushes"] == 4 and summary.stats["trainer_pushes"] == 0
    assert [s.weight_version for s in pods.states] == ["3", "3"]
    for state in pods.states:
        assert max_gap(served, state.engine.model.state_dict()) == 0.0
    assert all(pods.completions(i) > 0 for i in range(2))
