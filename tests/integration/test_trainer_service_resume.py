"""Run checkpoints in mode=training-service: the trainer part of `global_step_N` is the service's own
checkpoint (saved in the service's storage, named by `trainer.json`). A run stopped after 2 steps,
its service restarted on the same storage, and resumed with `resume.mode=auto` continues one
metrics series equal to an uninterrupted run's (one rollout worker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexrl_runtime import checkpoint as ckpt
from nexrl_runtime.controller import Controller
from tests.integration.test_trainer_service import config, service

RUN = [
    "mode=training-service",
    "warm_start.steps=0",
    "validation.path=null",
    "data.batch_size=4",
    "data.rollout_repeat_n=4",
    "rollout.num_workers=1",
    "trainer.grpo.entropy_coef=0.05",  # every datum has a gradient, so Adam's state matters
    "checkpoint.every=2",
    "logging.plot=false",
]


def rows(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in r.items() if not k.endswith("seconds")}
        for r in map(json.loads, lines)
        if r["phase"] == "rl" and r["step"] > 0
    ]


def run(out: Path, url: str, *extra: str) -> None:
    Controller(config(out, *RUN, f"cluster.trainer.base_url={url}", *extra), echo=None).run()


def test_stopped_service_run_resumes_equal_to_an_uninterrupted_one(tmp_path: Path) -> None:
    with service(config(tmp_path / "ref-service", "seed=7")) as client:
        run(tmp_path / "ref", client.base_url, "total_steps=4")
    reference = rows(tmp_path / "ref")

    storage = tmp_path / "service"
    with service(config(storage, "seed=7")) as client:
        run(tmp_path / "run", client.base_url, "total_steps=2")
    saved = tmp_path / "run" / "checkpoints" / "global_step_2"
    assert ckpt.is_complete(saved) and "model.safetensors" not in {p.name for p in saved.iterdir()}
    record = json.loads((saved / "trainer.json").read_text())
    assert record["step"] == 2 and Path(record["path"]).is_file()  # in the service's storage

    with service(config(storage, "seed=7")) as client:  # a restarted service, the same storage
        assert client.health().step == 0
        run(tmp_path / "run", client.base_url, "total_steps=4", "resume.mode=auto")
        assert client.health().step == 4
    resumed = rows(tmp_path / "run")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert len({r["loss"] for r in reference}) == 4
    assert resumed == reference


def test_resume_without_the_service_checkpoint_names_it(tmp_path: Path) -> None:
    with service(config(tmp_path / "service", "seed=7")) as client:
        run(tmp_path / "run", client.base_url, "total_steps=2")
    with service(config(tmp_path / "other-service", "seed=7")) as client, pytest.raises(
        RuntimeError, match="cannot load its checkpoint 'run-global_step_2'"
    ):
        run(tmp_path / "run", client.base_url, "total_steps=4", "resume.mode=auto")
