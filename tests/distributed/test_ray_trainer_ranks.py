"""Trainer ranks on Ray: `ray.trainer_ranks=2` makes two trainer actors, one FSDP2 rank each (gloo
on CPU), that rendezvous at rank 0's node and train every batch together. Against one rank on the
same batches, losses and pushed weights agree within float tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nexrl_runtime.config import ConfigError
from nexrl_runtime.distributed.weights import unpack
from tests.distributed.conftest import ray_config
from tests.distributed.replicas import http_config
from tests.integration.test_sync_modes import SMALL

ray = pytest.importorskip("ray")
from nexrl_runtime.distributed import RayController  # noqa: E402 - needs ray
from nexrl_runtime.distributed.proxies import StateRef  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_session")
COMMON = ["total_steps=4", "rollout.num_workers=1", "trainer.grpo.entropy_coef=0.05", "threads=1",
          "ray.trainer.num_cpus=0.5", "trainer.mini_batch_size=8", "trainer.micro_batch_size=3"]
LOSS_RTOL = 1e-5


def run(tmp_path: Path, ranks: int) -> tuple[RayController, list[dict]]:
    ctrl = RayController(ray_config(tmp_path, [*SMALL, *COMMON, f"ray.trainer_ranks={ranks}"]), echo=None)
    hosts = ctrl._runtime.role_hosts("trainer")
    real_run = ctrl._build_trainer

    def build_and_check():  # each actor is its own rank of one process group
        trainer = real_run()
        places = [ctrl._runtime.get(h, "trainer", "place") for h in hosts]
        assert places == [(i, ranks) for i in range(ranks)]
        return trainer

    ctrl._build_trainer = build_and_check
    ctrl.run()
    return ctrl, [r for r in ctrl.tracker.history if r["phase"] == "rl" and r["step"] > 0]


def test_two_trainer_ranks_train_as_one(tmp_path: Path) -> None:
    _, one = run(tmp_path / "one", 1)
    _, two = run(tmp_path / "two", 2)
    assert len(one) == len(two) == 4
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL, abs=1e-7), (a["step"], a, b)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["reward_mean"] == a["reward_mean"]  # the same samples: the pushed weights agree
    assert [r["policy_version"] for r in two] == [1, 2, 3, 4]


@pytest.mark.parametrize(("overrides", "said"), [
    (["ray.trainer_failure=restart-from-checkpoint"], "ray.trainer_failure: restart-from-checkpoint"),
    (["checkpoint.every=2"], "checkpoint.every / resume.mode: run checkpoints of a trainer of 2 ranks"),
])
def test_what_several_ranks_cannot_do_yet_is_refused_before_any_actor(
    tmp_path: Path, overrides: list[str], said: str
) -> None:
    with pytest.raises(ConfigError, match=said):
        RayController(ray_config(tmp_path, [*SMALL, "ray.trainer_ranks=2", *overrides]), echo=None)


def test_two_ranks_push_the_gathered_weights_to_every_replica_bitwise(
    tmp_path: Path, pods, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP inference with 2 trainer ranks: rank 0 gathers the sharded policy and pushes it; after
    each step both replicas serve exactly (bitwise) what the ranks hold."""
    cfg = http_config(tmp_path, pods.port, "total_steps=3", "ray.trainer_ranks=2", "ray.trainer.num_cpus=0.5",
                      "threads=1")
    ctrl = RayController(cfg, echo=None)
    log, checked = ctrl.tracker.log, []

    def log_then_compare(step: int, metrics: dict, phase: str = "rl") -> None:
        log(step, metrics, phase)
        if phase == "rl" and step > 0:
            held = unpack(ray.get(StateRef(ctrl._runtime.role_hosts("trainer")).ref))
            for state in pods.states:
                served = state.engine.model.state_dict()
                assert all(torch.equal(served[k], held[k]) for k in held), step
            checked.append(step)

    monkeypatch.setattr(ctrl.tracker, "log", log_then_compare)
    summary = ctrl.run()
    assert checked == [1, 2, 3] and summary.stats["trainer_pushes"] == 3
