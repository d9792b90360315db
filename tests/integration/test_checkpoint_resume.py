"""Checkpoints and exact resume on real runs of the arithmetic recipe (tiny sizes).

* `nexrl run` SIGKILLed at three points (each time once the checkpoint marker of a later step
  exists) and resumed with `resume.mode=auto` each time: with one rollout worker, the finished
  run's metrics rows equal an uninterrupted run's EXACTLY (wall-clock fields aside), as one series.
* Interrupted saves (a temp folder without marker, a folder with a file cut short) are passed over.
* `resume.mode=from_path` with another config's checkpoint fails with the `nexrl: resume.path:` line.
* A cosine lr schedule with warmup, resumed mid-schedule: the same lr sequence (and metrics) as
  an uninterrupted run.
* Two rollout workers: not compared value by value. Locally both share one engine and its one
  generator, so which worker samples first (thread scheduling) decides the draws: two
  uninterrupted runs differ too. The resumed run is checked to continue the same series.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nexrl_runtime import checkpoint as ckpt
from nexrl_runtime.config import load_config
from nexrl_runtime.config.schema import LRScheduleConfig
from nexrl_runtime.trainer.schedule import lr_factor
from tests.integration.conftest import RECIPE, run_arithmetic

NEXRL = [sys.executable, "-m", "nexrl_runtime.cli", "run", "-c", str(RECIPE)]
TINY = [
    "model.hidden_size=32",
    "model.num_layers=1",
    "data.batch_size=4",
    "data.rollout_repeat_n=4",
    "validation.limit=8",
    "validation.every=4",
    "warm_start.steps=3",
    "warm_start.batch_size=8",
    "trainer.grpo.entropy_coef=0.05",  # every step has a real gradient, so Adam's state matters
    "logging.progress_bar=false",
    "logging.plot=false",
]
ONE_WORKER = [*TINY, "rollout.num_workers=1", "checkpoint.every=1"]
WALL_CLOCK = {
    "rollout_seconds",
    "generate_seconds",
    "score_seconds",
    "train_seconds",
    "sync_seconds",
    "wait_seconds",
    "step_seconds",
}


def rl_rows(folder: Path) -> list[dict]:
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows if r["phase"] == "rl"]


def start(out: Path, overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*NEXRL, *overrides, f"output_dir={out}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def kill_after_marker(proc: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {marker} within {timeout:.0f} s"
        time.sleep(0.01)  # polling a file another process writes; the marker is what we wait on
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkilled_three_times_and_resumed_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    total = 30
    overrides = [*ONE_WORKER, f"total_steps={total}"]
    _, reference = run_arithmetic(tmp_path / "ref", overrides)

    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    resumed_at = []
    for target in (4, 12, 20):
        args = overrides if not resumed_at else [*overrides, "resume.mode=auto"]
        kill_after_marker(start(out, args), ckpts / f"global_step_{target}" / ckpt.MARKER)
        latest = ckpt.latest_checkpoint(ckpts)
        assert latest is not None
        resumed_at.append(ckpt.step_of(latest))
    assert resumed_at[0] < resumed_at[1] < resumed_at[2] < total, resumed_at

    proc = start(out, [*overrides, "resume.mode=auto"])
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"resumed from {ckpts / f'global_step_{resumed_at[-1]}'}" in stdout
    assert "held-out accuracy after warm start" not in stdout  # the warm start is not redone
    rows = rl_rows(out)
    assert [r["step"] for r in rows] == list(range(total + 1))  # one series, step 0 (after warm start) once
    ref = [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in reference]
    assert rows[1:] == ref
    assert len({r["loss"] for r in ref}) > total // 2 and all(r["grad_norm"] > 0 for r in ref)
    assert [r["policy_version"] for r in rows[1:]] == list(range(1, total + 1))
    assert not list(ckpts.glob(".tmp-*"))  # a save the kill interrupted is cleaned up


def test_interrupted_saves_are_skipped_and_another_config_is_refused(tmp_path: Path) -> None:
    overrides = [*TINY, "rollout.num_workers=1", "checkpoint.every=2", "checkpoint.keep_last=2"]
    _, reference = run_arithmetic(tmp_path / "ref", [*overrides, "total_steps=6"])
    out = tmp_path / "run"
    run_arithmetic(out, [*overrides, "total_steps=4"])
    ckpts = out / "checkpoints"
    assert [s for s, _ in ckpt.complete_checkpoints(ckpts)] == [2, 4]
    # a save killed before its rename (no marker), and a folder whose model file was cut short
    shutil.copytree(ckpts / "global_step_4", ckpts / ".tmp-global_step_6-dead")
    (ckpts / ".tmp-global_step_6-dead" / ckpt.MARKER).unlink()
    shutil.copytree(ckpts / "global_step_4", ckpts / "global_step_6")
    model = ckpts / "global_step_6" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:1000])

    summary, rows = run_arithmetic(out, [*overrides, "total_steps=6", "resume.mode=auto"])
    assert summary.steps == 6
    strip = [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in reference]
    assert [s for s, _ in ckpt.complete_checkpoints(ckpts)] == [4, 6]  # keep_last=2
    assert not list(ckpts.glob(".tmp-*"))

    wrong = subprocess.run(
        [
            *NEXRL,
            *overrides,
            "trainer.optim.lr=1e-3",
            "resume.mode=from_path",
            f"resume.path={ckpts / 'global_step_6'}",
            f"output_dir={tmp_path / 'other'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrong.returncode == 2
    line = wrong.stderr.strip().splitlines()[-1]
    state = json.loads((ckpts / "global_step_6" / "state.json").read_text())
    assert line.startswith("nexrl: resume.path: ") and state["config_hash"] in line, wrong.stderr
    assert "differing top-level keys: trainer" in line
    assert not (tmp_path / "other" / "metrics.jsonl").exists()  # refused before any work


def test_two_workers_resume_continues_the_series(tmp_path: Path) -> None:
    overrides = [*TINY, "rollout.num_workers=2", "checkpoint.every=2", "checkpoint.export_hf=true"]
    run_arithmetic(tmp_path, [*overrides, "total_steps=4"])
    before = rl_rows(tmp_path)
    summary, rows = run_arithmetic(tmp_path, [*overrides, "total_steps=6", "resume.mode=auto"])
    assert summary.steps == 6 and [r["step"] for r in rows] == list(range(1, 7))
    assert [r["policy_version"] for r in rows] == list(range(1, 7))
    assert [r["weight_pushes"] for r in rows] == list(range(1, 7))
    assert rl_rows(tmp_path)[:5] == before  # steps 0..4 kept as they were
    assert (tmp_path / "checkpoints" / "global_step_6" / "hf" / "model.safetensors").exists()


def test_resume_mid_lr_schedule_continues_the_same_lr_sequence(tmp_path: Path) -> None:
    schedule = {"kind": "cosine", "warmup_steps": 2, "decay_steps": 4, "min_lr_ratio": 0.1}
    overrides = [
        *TINY,
        "rollout.num_workers=1",
        "checkpoint.every=2",
        *(f"trainer.lr_schedule.{k}={v}" for k, v in schedule.items()),
    ]
    _, reference = run_arithmetic(tmp_path / "ref", [*overrides, "total_steps=6"])
    out = tmp_path / "run"
    run_arithmetic(out, [*overrides, "total_steps=4"])  # at 4 both runs validate: same RNG draws
    _, rows = run_arithmetic(out, [*overrides, "total_steps=6", "resume.mode=auto"])
    strip = [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in reference]
    lr = load_config(RECIPE, overrides).trainer.optim.lr
    want = [lr * lr_factor(k, LRScheduleConfig.model_validate(schedule)) for k in range(6)]
    assert [r["lr"] for r in rows] == pytest.approx(want, rel=1e-12)  # one optimizer step per RL step
    assert len(set(want)) == 5  # warmup, peak, decay: and still decaying across the resume at step 4
