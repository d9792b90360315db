"""launch_mode=ray on a real local Ray: the recipe runs, asks Ray for what the config says, survives
a killed rollout worker (and, when told, a killed trainer), and matches the local run exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexrl_runtime.distributed.layout import total_request
from tests.distributed.conftest import ray_config, wait_for
from tests.integration.conftest import run_arithmetic
from tests.integration.test_sync_modes import SMALL

ray = pytest.importorskip("ray")
from nexrl_runtime.distributed import RayController  # noqa: E402 - needs ray

pytestmark = pytest.mark.usefixtures("ray_session")
TIMING = ("seconds",)


def held(keys: set[str]) -> dict[str, float]:
    """What is taken out of the cluster's totals right now (Ray's view, refreshed asynchronously)."""
    total, free = ray.cluster_resources(), ray.available_resources()
    return {k: round(total.get(k, 0.0) - free.get(k, 0.0), 6) for k in keys}


def kill_at(ctrl: RayController, monkeypatch: pytest.MonkeyPatch, victims: dict[int, str]) -> list[int]:
    """Kill the actor of role `victims[step]` right after that step is logged; returns the old pids."""
    log, killed = ctrl.tracker.log, []

    def log_then_kill(step: int, metrics: dict, phase: str = "rl") -> None:
        log(step, metrics, phase)
        if phase == "rl" and step in victims:
            host = ctrl._runtime.role_hosts(victims[step])[0]
            killed.append(host.pid)
            ray.kill(host.handle)

    monkeypatch.setattr(ctrl.tracker, "log", log_then_kill)
    return killed


def test_default_recipe_on_ray_holds_its_resources_and_survives_killed_actors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe's two rollout workers + validation on Ray: requests as configured; a rollout worker
    actor killed after step 2 and the trainer actor after step 3 are replaced and training goes on."""
    cfg = ray_config(
        tmp_path,
        [
            "total_steps=5",
            "validation.path=data/test.jsonl",
            "validation.limit=8",
            "validation.every=2",
            "cluster.trainer.nodes=1",
            "cluster.trainer.gpus_per_node=1",  # as the operator writes it: the trainer pod's GPU
            "ray.rollout.resources={nexrl_test:1}",
            "ray.trainer_failure=restart-from-checkpoint",
        ],
    )
    ctrl = RayController(cfg, echo=None)
    runtime = ctrl._runtime
    want = total_request(cfg, runtime.plans)
    assert want == {"CPU": 2.0, "GPU": 1.0, "nexrl_test": 2.0}
    wait_for(lambda: held(set(want)) == want, 30, f"Ray to show {want} held")
    table = ray.util.placement_group_table(runtime.pg)
    assert list(table["bundles"].values()) == [{"CPU": 1.0, "GPU": 1.0}]  # the trainer's bundle

    old = kill_at(ctrl, monkeypatch, {2: "rollout", 3: "trainer"})
    summary = ctrl.run()
    assert summary.steps == 5 and summary.stats["weight_pushes"] == 5 and summary.stats["ray_pushes"] == 5
    assert summary.stats["restarts_rollout"] == 1 and summary.stats["restarts_engine"] == 1
    assert summary.stats["restarts_trainer"] == 1 and runtime.checkpoint.exists()
    assert runtime.role_hosts("rollout")[0].pid != old[0]
    assert "val_accuracy" in summary.val_final and "val_accuracy" in summary.val_after_warm_start
    rows = [r for r in ctrl.tracker.history if r["phase"] == "rl" and r["step"] > 0]
    assert [r["policy_version"] for r in rows] == list(range(1, 6))
    wait_for(lambda: held(set(want)) == dict.fromkeys(want, 0.0), 30, "actors to be freed")


def test_dead_trainer_fails_the_run_under_the_default_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = ray_config(
        tmp_path, ["total_steps=4", "rollout.num_workers=1", "ray.colocate={all:[trainer,engine,rollout]}"]
    )
    assert cfg.ray.trainer_failure == "fail"
    ctrl = RayController(cfg, echo=None)
    assert [p.roles for p in ctrl._runtime.plans] == [("trainer", "engine", "rollout")]
    kill_at(ctrl, monkeypatch, {2: "trainer"})
    with pytest.raises(RuntimeError, match=r"trainer actor .* died"):
        ctrl.run()
    assert max(r["step"] for r in ctrl.tracker.history) == 2


def test_local_and_ray_give_the_same_batches_and_losses(tmp_path: Path) -> None:
    """Bitwise equal with one rollout worker; see docs/distributed.md for N > 1. An untrained model
    earns no reward, so an entropy bonus gives every step a real gradient: the weights move, and
    each batch is sampled from the weights the previous step pushed."""
    common = [*SMALL, "total_steps=4", "rollout.num_workers=1", "trainer.grpo.entropy_coef=0.05"]
    common += ["warm_start.steps=3", "warm_start.batch_size=8"]  # its weights reach the actors too
    _, local = run_arithmetic(tmp_path / "local", common)
    summary, remote = run_arithmetic(tmp_path / "ray", [*common, "launch_mode=ray"])
    assert summary.stats["ray_pushes"] == 5  # after the warm start, then one per step

    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.endswith(TIMING)} for r in rows]

    assert len(local) == 4 and strip(local) == strip(remote)
    assert len({r["loss"] for r in local}) == 4 and all(r["grad_norm"] > 0 for r in local)


HANG_ONCE = '''
import time
from pathlib import Path

from nexrl_runtime.rollout.evaluator import EvalResult, Evaluator

MARK = Path(__file__).with_suffix(".hung")


class HangOnce(Evaluator):
    """Exact-answer reward; the first call in this run never returns (a stuck scorer)."""

    def evaluate(self, item, response):
        if not MARK.exists():
            MARK.write_text("hung")
            time.sleep(3600)
        exact = response.strip() == str(item["answer"])
        return EvalResult(reward=float(exact), correct=exact)
'''


def test_a_rollout_actor_that_stops_answering_is_replaced_and_its_items_rolled_again(tmp_path: Path) -> None:
    scorer = tmp_path / "hang_once.py"
    scorer.write_text(HANG_ONCE)
    cfg = ray_config(tmp_path, ["total_steps=3", "rollout.num_workers=1", "ray.call_timeout_s=10",
                                f"rollout.evaluator={scorer}:HangOnce"])
    ctrl = RayController(cfg, echo=None)
    first = ctrl._runtime.role_hosts("rollout")[0].pid
    summary = ctrl.run()
    assert summary.steps == 3 and scorer.with_suffix(".hung").exists()
    assert summary.stats["hung_rollout"] == 1 and summary.stats["restarts_rollout"] == 1
    assert ctrl._runtime.role_hosts("rollout")[0].pid != first
