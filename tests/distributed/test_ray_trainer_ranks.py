"""Trainer ranks on Ray: `ray.trainer_ranks=2` makes two trainer actors, one FSDP2 rank each (gloo
on CPU), that rendezvous at rank 0's node and train every batch together. Against one rank on the
same batches, losses and pushed weights agree within float tolerance; a 2-rank run checkpoint
resumes on 2 ranks or 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nexrl_runtime import checkpoint as ckpt
from nexrl_runtime.config import ConfigError, load_config
from nexrl_runtime.distributed.weights import unpack
from tests.distributed.conftest import ray_config
from tests.distributed.replicas import http_config
from tests.integration.conftest import RECIPE
from tests.integration.test_sync_modes import SMALL

ray = pytest.importorskip("ray")
from nexrl_runtime.distributed import RayController  # noqa: E402 - needs ray
from nexrl_runtime.distributed.proxies import StateRef  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_session")
COMMON = ["total_steps=4", "rollout.num_workers=1", "trainer.grpo.entropy_coef=0.05", "threads=1",
          "ray.trainer.num_cpus=0.5", "trainer.mini_batch_size=8", "trainer.micro_batch_size=3"]
LOSS_RTOL = 1e-5


def run(tmp_path: Path, ranks: int, args: list[str] = COMMON) -> tuple[RayController, list[dict]]:
    ctrl = RayController(ray_config(tmp_path, [*SMALL, *args, f"ray.trainer_ranks={ranks}"]), echo=None)
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


def test_what_several_ranks_cannot_do_yet_is_refused_before_any_actor(tmp_path: Path) -> None:
    overrides = [*SMALL, "ray.trainer_ranks=2", "ray.trainer_failure=restart-from-checkpoint"]
    with pytest.raises(ConfigError, match=r"ray.trainer_failure: restart-from-checkpoint"):
        RayController(ray_config(tmp_path, overrides), echo=None)


CKPT_ARGS = [*COMMON, "checkpoint.every=2"]


@pytest.fixture(scope="module")
def stopped_at_two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """An uninterrupted 2-rank run of 4 steps, and a 2-rank run stopped at step 2 (its checkpoint)."""
    root = tmp_path_factory.mktemp("ranks-ckpt")
    _, reference = run(root / "ref", 2, CKPT_ARGS)
    cfg = ray_config(root / "run", [*SMALL, *CKPT_ARGS, "ray.trainer_ranks=2", "total_steps=2"])
    RayController(cfg, echo=None).run()
    return root / "run", reference


@pytest.mark.parametrize("resume_ranks", [2, 1])
def test_two_rank_run_checkpoint_resumes_on_two_or_one_rank(
    tmp_path: Path, stopped_at_two: tuple[Path, list[dict]], resume_ranks: int
) -> None:
    """2 ranks stop at step 2 (a DCP checkpoint, each rank its shards); resumed with `auto` on
    `resume_ranks` ranks, the run continues one series equal to the uninterrupted 2-rank run."""
    stopped, reference = stopped_at_two
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    saved = out / "checkpoints" / "global_step_2"
    assert ckpt.is_complete(saved) and {"dcp", "trainer.pt", "rng.pt"} <= {p.name for p in saved.iterdir()}
    assert "dcp/.metadata" in ckpt.read_marker(saved)["files"]
    run(out, resume_ranks, [*CKPT_ARGS, "resume.mode=auto"])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    rows = [r for r in map(json.loads, lines) if r["phase"] == "rl" and r["step"] > 0]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and [r["policy_version"] for r in rows] == [1, 2, 3, 4]
    for a, b in zip(reference, rows, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL, abs=1e-7), (a["step"], a, b)
        assert b["reward_mean"] == a["reward_mean"]


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


@pytest.mark.slow
def test_the_default_recipe_learns_with_two_trainer_ranks(tmp_path: Path) -> None:
    """The shortened default recipe (as test_recipe_learns) with 2 FSDP2 trainer ranks on Ray."""
    overrides = [f"output_dir={tmp_path}", "launch_mode=ray", "logging.progress_bar=false", "total_steps=100",
                 "validation.every=100", "logging.plot=false", "ray.trainer_ranks=2",
                 "ray.trainer.num_cpus=0.5", "threads=1"]
    summary = RayController(load_config(RECIPE, overrides), echo=None).run()
    before, after = summary.val_after_warm_start["val_accuracy"], summary.val_final["val_accuracy"]
    print(f"held-out accuracy with 2 trainer ranks: warm start {before:.3f} -> after RL {after:.3f}")
    assert before <= 0.5 and after >= before + 0.3
