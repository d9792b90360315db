"""Run checkpoints across trainer rank counts (trainer/dcp_checkpoint.py): a 2-rank FSDP2 trainer's
DCP checkpoint resumes on 2 ranks and in one plain process, a single-process checkpoint resumes on
2 ranks, and each continues equal (1e-5) to one uninterrupted process: weights, optimizer state,
the KL reference, the lr schedule and the step all carry over."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nexrl_runtime.trainer import GRPOTrainer
from nexrl_runtime.trainer.dcp_checkpoint import load_model_weights
from tests.integration.test_fsdp_ranks import torchrun
from tests.support import fsdp_ckpt_worker as worker
from tests.support.fsdp_worker import batch, model

WORKER = Path(worker.__file__)


def plain(m, c) -> GRPOTrainer:
    return GRPOTrainer(m, c, 0)


def close(one: dict, two: dict) -> None:
    for key in one["metrics"]:
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-5, rel=1e-5), key
    assert one["weights"].keys() == two["weights"].keys()
    for name, w in one["weights"].items():
        assert (two["weights"][name] - w).abs().max().item() <= 1e-5, name


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ckpt")
    (root / "one").mkdir()
    worker.first_step(plain, root / "one")  # the single-process format
    torchrun(2, WORKER, str(root))
    return root


@pytest.fixture(scope="module")
def uninterrupted() -> dict:
    torch.set_num_threads(1)
    trainer = plain(model(), worker.trainer_config())
    trainer.train_step(batch(0))
    metrics = trainer.train_step(batch(1))
    return {"metrics": metrics, "weights": trainer.state_dict()}


def test_sharded_checkpoint_is_dcp(saved: Path) -> None:
    files = {p.name for p in (saved / "two").iterdir()}
    assert files == {"dcp", "trainer.pt"}
    shards = {p.name for p in (saved / "two" / "dcp").iterdir()}
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= shards
    assert torch.load(saved / "two" / "trainer.pt", weights_only=True)["world_size"] == 2


@pytest.mark.parametrize("src", ["two", "one"])
def test_resume_on_two_ranks_equals_uninterrupted(saved: Path, uninterrupted: dict, src: str) -> None:
    close(uninterrupted, torch.load(saved / f"{src}-on-2.pt", weights_only=True))


def test_two_rank_checkpoint_resumes_in_one_process(saved: Path, uninterrupted: dict) -> None:
    torch.set_num_threads(1)
    close(uninterrupted, worker.resumed_step(plain, saved / "two"))


def test_lr_moved(uninterrupted: dict) -> None:
    # the schedule really moves (so a scheduler not restored would show) and the reference is used
    first = plain(model(), worker.trainer_config())
    assert first.train_step(batch(0))["lr"] != uninterrupted["metrics"]["lr"]


def test_export_reads_the_policy_of_a_sharded_checkpoint(saved: Path) -> None:
    torch.set_num_threads(1)
    exported = model(seed=5)
    load_model_weights(exported, saved / "two")
    resumed = plain(model(seed=9), worker.trainer_config())
    resumed.load_checkpoint(saved / "two")
    held, start = resumed.state_dict(), model(seed=5).state_dict()
    assert all(torch.equal(exported.state_dict()[k], held[k]) for k in held)
    assert any(not torch.equal(start[k], held[k]) for k in held)
