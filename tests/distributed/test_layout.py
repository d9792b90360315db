"""The Ray plan as data (no Ray): colocation groups, requests, GPU bundles, weights packing."""

from __future__ import annotations

import pytest
import torch

from nexrl_runtime.config import ConfigError, load_config
from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.distributed.layout import actor_options, bundles, plan_groups, total_request
from nexrl_runtime.distributed.weights import pack, unpack
from tests.integration.conftest import RECIPE


def cfg(*overrides: str) -> NexRLConfig:
    return load_config(RECIPE, ["launch_mode=ray", *overrides])


def test_default_layout_colocates_an_engine_with_each_rollout_worker() -> None:
    plans = {p.name: p for p in plan_groups(cfg("rollout.num_workers=3"))}
    assert plans["rollout"].roles == ("engine", "rollout") and plans["rollout"].count == 3
    assert plans["trainer"].roles == ("trainer", "validator") and plans["trainer"].count == 1
    assert plans["rollout"].num_cpus == 0.5 and plans["trainer"].num_cpus == 1.0
    assert bundles(cfg(), list(plans.values())) == []  # no GPUs asked: no placement group


def test_group_requests_are_the_sum_of_their_roles() -> None:
    c = cfg(
        "ray.colocate={main:[trainer,engine]}",
        "ray.trainer.num_gpus=1",
        "ray.engine.num_gpus=0.5",
        "ray.engine.num_cpus=0.25",
        "ray.rollout.resources={rollout_slot:1}",
    )
    plans = {p.name: p for p in plan_groups(c, with_validator=False)}
    assert set(plans) == {"main", "rollout"}
    main = plans["main"]
    assert main.bundle() == {"CPU": 1.25, "GPU": 1.5}
    assert bundles(c, list(plans.values())) == [("main", 0, {"CPU": 1.25, "GPU": 1.5})]
    assert actor_options(plans["rollout"])["resources"] == {"rollout_slot": 1.0}
    assert actor_options(main)["max_restarts"] == 0  # restarts are the runtime's own
    assert total_request(c, list(plans.values())) == {"CPU": 2.25, "GPU": 1.5, "rollout_slot": 2.0}


def test_in_cluster_trainer_gpus_come_from_the_cluster_section() -> None:
    """Every GPU of the trainer pods is one rank: an actor and a one-GPU bundle each."""
    c = cfg("cluster.trainer.nodes=2", "cluster.trainer.gpus_per_node=4", "ray.trainer.num_gpus=3")
    plans = plan_groups(c)
    trainer = next(p for p in plans if p.name == "trainer")
    assert (trainer.count, trainer.num_gpus) == (8, 1.0)  # the pod limits, not ray.trainer
    assert trainer.roles_of(0) == ("trainer", "validator") and trainer.roles_of(5) == ("trainer",)
    assert [b for _, _, b in bundles(c, plans)] == [{"CPU": 1.0, "GPU": 1.0}] * 8
    one = cfg("cluster.trainer.nodes=1", "cluster.trainer.gpus_per_node=1")
    assert [b for _, _, b in bundles(one, plan_groups(one))] == [{"CPU": 1.0, "GPU": 1.0}]
    local = plan_groups(cfg("ray.trainer_ranks=3"))
    assert next(p for p in local if p.name == "trainer").count == 3


def test_roles_of_one_group_need_equal_counts() -> None:
    c = cfg("ray.colocate={main:[trainer,rollout]}", "rollout.num_workers=2")
    with pytest.raises(ConfigError, match=r"ray.colocate.main: roles .* same number of actors"):
        plan_groups(c)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ray.colocate={a:[trainer],b:[trainer,engine]}", "colocation groups"),
        ("ray.colocate={a:[pool]}", "ray.colocate.a.0"),
        ("ray.rollout.resources={GPU:1}", "use num_cpus / num_gpus"),
    ],
)
def test_bad_ray_sections_fail_at_load(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg(override)


def test_pack_is_zero_copy_and_round_trips_bfloat16() -> None:
    sd = {"w": torch.randn(3, 4), "b": torch.randn(5).to(torch.bfloat16)}
    packed = pack(sd)
    assert packed.arrays["w"].ctypes.data == sd["w"].data_ptr()  # a view, not a copy
    back = unpack(packed)
    assert back["b"].dtype == torch.bfloat16
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    assert packed.nbytes == 3 * 4 * 4 + 5 * 2


def test_training_service_mode_has_no_trainer_actor() -> None:
    c = cfg("mode=training-service", "cluster.trainer.base_url=http://trainer:8000")
    assert all("trainer" not in p.roles for p in plan_groups(c))


def test_driver_address_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """ray.address, then $RAY_ADDRESS (a RayJob's head), then cluster.ray_address, else start locally."""
    pytest.importorskip("ray")
    from nexrl_runtime.distributed.driver import ray_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(cfg()) is None
    assert ray_address(cfg("cluster.ray_address=auto")) == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_address(cfg("cluster.ray_address=auto")) == "10.0.0.1:6379"
    assert ray_address(cfg("ray.address=ray://head:10001")) == "ray://head:10001"
