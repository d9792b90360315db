"""The `nexrl` command: both invocation forms, config errors before any work, Ctrl-C stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import RECIPE

NEXRL = [sys.executable, "-m", "nexrl_runtime.cli"]
SMALL = [
    "warm_start.steps=0",
    "model.hidden_size=32",
    "model.num_layers=1",
    "data.batch_size=4",
    "data.rollout_repeat_n=4",
    "validation.limit=8",
    "validation.every=2",
]


def test_bad_config_fails_fast_with_path(tmp_path: Path) -> None:
    out = subprocess.run(
        [*NEXRL, "run", "-c", str(RECIPE), "trainer.grpo.loss_agg=mean", f"output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "trainer.grpo.loss_agg: must be one of 'token-mean'" in out.stderr and "(got 'mean')" in out.stderr
    assert not (tmp_path / "metrics.jsonl").exists()  # nothing started


@pytest.mark.parametrize(("overrides", "said"), [
    (["launch_mode=ray", "inference.engine=openai"],
     "nexrl: inference.base_urls: inference.engine=openai needs"),
    (["launch_mode=ray", "inference.engine=openai", "inference.base_urls=[inference:8000]"],
     "nexrl: inference.base_urls: 'inference:8000' has no host name"),
    (["inference.engine=openai", "inference.base_urls=[http://127.0.0.1:9]", "inference.weight_sync=nccl",
      "inference.nccl_master=trainer"], "nexrl: inference.nccl_master: must be 'host:port' (got 'trainer')"),
    (["launch_mode=ray", "ray.colocate={main:[trainer,rollout]}", "rollout.num_workers=2"],
     "nexrl: ray.colocate.main: roles ['trainer', 'rollout'] must have the same number of actors"),
    (["inference.engine=openai"], "nexrl: inference.base_urls: inference.engine=openai needs"),
    (["inference.engine=vllm"], "nexrl: model.path: inference.engine=vllm serves an HF folder"),
])
def test_config_errors_found_at_start_up_are_words_and_exit_2(overrides: list[str], said: str,
                                                               tmp_path: Path) -> None:
    out = subprocess.run([*NEXRL, "run", "-c", str(RECIPE), *SMALL, *overrides, f"output_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=300)
    assert (out.returncode, "Traceback" in out.stderr) == (2, False), out.stderr[-3000:]
    assert said in out.stderr


def test_docs_form_runs_and_writes_metrics_and_plot(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *NEXRL,
            "-m",
            "self-hosted",
            "-c",
            str(RECIPE),
            "--run-nexrl",
            *SMALL,
            "total_steps=2",
            f"output_dir={tmp_path}",
            "logging.progress_bar=false",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "held-out accuracy after RL (2 steps)" in out.stdout
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["phase"] == "rl" and r["step"] > 0] == [1, 2]
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    proc = subprocess.Popen(
        [*NEXRL, "run", "-c", str(RECIPE), *SMALL, "total_steps=100000", f"output_dir={tmp_path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 180
    while not (metrics.exists() and '"step": 2' in metrics.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no training step within 180 s"
        time.sleep(0.2)  # polling a file another process writes; the condition above is what we wait on
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted: stopping cleanly" in stdout
    assert (tmp_path / "curves.png").exists()
    assert "Traceback" not in stderr
