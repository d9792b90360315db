"""Error policies: a failing evaluator costs its sample (continue) or stops the run naming the item
(stop); a NaN loss never becomes an update; too-long prompts are filtered at load."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nexrl_runtime.config import load_config
from nexrl_runtime.errors import RunStopped
from nexrl_runtime.launch import run_recipe
from tests.integration.conftest import RECIPE, SHRINK, run_arithmetic

SMALL = [*SHRINK, "validation.every=100", "logging.plot=false"]

FLAKY = """
import random
import threading

from nexrl_runtime.rollout import EvalResult, Evaluator

_rng = random.Random(0)
_lock = threading.Lock()


class Flaky(Evaluator):
    '''Fails on ~10% of samples; returns the response length as its own metric.'''

    def evaluate(self, item, response):
        with _lock:
            fail = _rng.random() < 0.1
        if fail:
            raise ZeroDivisionError("flaky evaluator: boom")
        ok = response.strip() == str(item["answer"])
        return EvalResult(reward=float(ok), correct=ok, metrics={"response_chars": float(len(response))})
"""


def flaky(tmp_path: Path) -> str:
    path = tmp_path / "flaky_eval.py"
    path.write_text(textwrap.dedent(FLAKY))
    return f"rollout.evaluator={path}:Flaky"


def test_continue_counts_about_ten_percent_and_trains_on_the_rest(tmp_path: Path) -> None:
    steps = 12
    summary, rows = run_arithmetic(
        tmp_path, [*SMALL, flaky(tmp_path), "errors.policy=continue", f"total_steps={steps}"]
    )
    assert summary.steps == steps
    last = rows[-1]
    failed = last["errors_evaluator"]
    trained = sum(r["batch_size"] for r in rows)
    # every sample is failed, trained on, or a group-mate of a failed one (dropped whole)
    seen = failed + trained + last["dropped_with_failed"]
    assert 0.03 < failed / seen < 0.2, (failed, seen)
    assert last["dropped_with_failed"] <= 3 * failed  # groups of 4: at most 3 mates per failure
    assert last["errors_rollout"] == last["errors_inference"] == 0
    assert all(r["batch_size"] % 4 == 0 for r in rows)  # whole groups only
    assert all("eval/response_chars" in r for r in rows)  # the evaluator's metrics, as batch means


def test_stop_names_the_item_and_the_error(tmp_path: Path) -> None:
    cfg = load_config(
        RECIPE, [f"output_dir={tmp_path}", "logging.progress_bar=false", *SMALL, flaky(tmp_path),
                 "errors.policy=stop", "total_steps=50"],
    )
    with pytest.raises(RunStopped) as info:
        run_recipe(cfg, echo=None)
    said = str(info.value)
    assert "evaluator error on item e" in said and "(data index " in said
    assert "ZeroDivisionError: flaky evaluator: boom" in said


def test_caps_stop_a_continue_run(tmp_path: Path) -> None:
    cfg = load_config(
        RECIPE, [f"output_dir={tmp_path}", "logging.progress_bar=false", *SMALL, flaky(tmp_path),
                 "errors.policy=continue", "errors.max_total=3", "total_steps=200"],
    )
    with pytest.raises(RunStopped, match=r"4 failed samples exceed errors.max_total=3"):
        run_recipe(cfg, echo=None)


def test_cli_stop_exits_1_with_words(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nexrl_runtime.cli", "run", "-c", str(RECIPE), *SMALL, flaky(tmp_path),
         "total_steps=50", "logging.progress_bar=false", f"output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "nexrl: run stopped: evaluator error on item" in out.stderr
    assert "Traceback (most recent call last)" in out.stderr  # logged once, for the first error


NAN_TRAINER = """
import torch

from nexrl_runtime.trainer import GRPOTrainer


class NaNLoss(GRPOTrainer):
    def compute_loss(self, micro, norm):
        loss, metrics = super().compute_loss(micro, norm)
        return loss * torch.tensor(float("nan")), metrics
"""


def test_nan_loss_is_never_an_update(tmp_path: Path) -> None:
    trainer = tmp_path / "nan_trainer.py"
    trainer.write_text(textwrap.dedent(NAN_TRAINER))
    summary, rows = run_arithmetic(
        tmp_path, [*SMALL, f"trainer.type={trainer}:NaNLoss", "total_steps=3", "checkpoint.every=3"]
    )
    assert summary.steps == 3
    assert [r["errors_nonfinite"] for r in rows] == [1.0, 2.0, 3.0]
    assert all(r["skipped_steps"] == 1.0 for r in rows)
    # the weights after 3 steps are the initial ones: no update happened
    from safetensors.torch import load_file

    from nexrl_runtime.models import build_policy

    cfg = load_config(RECIPE, SMALL)
    import torch

    torch.manual_seed(cfg.seed)
    fresh, _ = build_policy(cfg.model)
    saved = load_file(str(tmp_path / "checkpoints" / "global_step_3" / "model.safetensors"))
    for name, value in fresh.state_dict().items():
        if name in saved:
            assert torch.equal(saved[name], value.cpu()), name


def test_nan_loss_stops_with_on_nonfinite_stop(tmp_path: Path) -> None:
    trainer = tmp_path / "nan_trainer.py"
    trainer.write_text(textwrap.dedent(NAN_TRAINER))
    cfg = load_config(
        RECIPE, [f"output_dir={tmp_path}", "logging.progress_bar=false", *SMALL,
                 f"trainer.type={trainer}:NaNLoss", "errors.on_nonfinite=stop", "total_steps=3"],
    )
    with pytest.raises(RunStopped, match=r"step 1: non-finite loss=nan"):
        run_recipe(cfg, echo=None)


def test_error_counts_go_on_after_a_resume(tmp_path: Path) -> None:
    args = [*SMALL, flaky(tmp_path), "errors.policy=continue", "checkpoint.every=2", "rollout.num_workers=1"]
    _, first = run_arithmetic(tmp_path, [*args, "total_steps=2"])
    _, rows = run_arithmetic(tmp_path, [*args, "total_steps=4", "resume.mode=auto"])
    assert first[-1]["errors_evaluator"] > 0
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[2]["errors_evaluator"] >= first[-1]["errors_evaluator"]  # cumulative across the resume


def test_a_too_long_prompt_is_refused_at_load_naming_the_item(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nexrl_runtime.cli", "run", "-c", str(RECIPE), *SMALL, "data.too_long=error",
         "rollout.max_sequence_length=6", "logging.progress_bar=false", f"output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert (out.returncode, "Traceback" in out.stderr) == (2, False), out.stderr[-3000:]
    assert "nexrl: data.path: " in out.stderr and "has a prompt of 6 tokens, more than the 5" in out.stderr
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before any work
