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

from nexrl_runtime.cli import main
from tests.integration.conftest import RECIPE, SHRINK

NEXRL = [sys.executable, "-m", "nexrl_runtime.cli"]
SMALL = [*SHRINK, "validation.every=2"]


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


START_ERRORS = [  # (command and options, overrides ({tmp}: the test's folder), what stderr starts with)
    ("run", ["data.path=nope.jsonl"], "nexrl: data.path: data file not found: "),
    ("run", ["validation.path=nope.jsonl"], "nexrl: validation.path: data file not found: "),
    ("run", ["data.limit=2"], "nexrl: data.batch_size: "),
    ("run", ["data.prompt_key=question"], "nexrl: data.path: "),
    ("run", ["rollout.evaluator=nope.py:Nope"], "nexrl: rollout.evaluator: 'nope.py:Nope': file "),
    ("run", ["rollout.evaluator={tmp}/broken.py:Evaluator"], "nexrl: rollout.evaluator: "),
    ("run", ["rollout.worker=bogus"], "nexrl: rollout.worker: unknown RolloutWorker 'bogus'"),
    ("run", ["trainer.type=ppo"], "nexrl: trainer.type: unknown Trainer 'ppo'"),
    ("run", ["model.kind=hf", "model.path={tmp}/no-model"], "nexrl: model.path: "),
    ("run", ["model.kind=hf", "model.path={tmp}"], "nexrl: model.path: "),
    ("run", ["model.device=cuda:99"], "nexrl: model.device: 'cuda:99', but torch sees "),
    ("run", ["warm_start.steps=1", "warm_start.answer_key=nope"], "nexrl: warm_start.answer_key: "),
    ("run", ["mode=training-service"], "nexrl: cluster.trainer.base_url: mode=training-service needs"),
    ("run", ["output_dir={tmp}/a-file/run"], "nexrl: output_dir: cannot create the folder "),
    ("run", ["checkpoint.every=1", "checkpoint.dir={tmp}/a-file/ckpt"], "nexrl: checkpoint.dir: "),
    ("run", ["pool.grouping=hierarchical"], "nexrl: invalid config:\n  pool.group_keys: pool.grouping="),
    ("run", ["inference.engine=openai"], "nexrl: inference.base_urls: inference.engine=openai needs"),
    ("run", ["inference.engine=vllm"], "nexrl: model.path: inference.engine=vllm serves an HF folder"),
    ("run", ["launch_mode=ray", "inference.engine=openai"],
     "nexrl: inference.base_urls: inference.engine=openai needs"),
    ("run", ["launch_mode=ray", "inference.engine=openai", "inference.base_urls=[inference:8000]"],
     "nexrl: inference.base_urls: 'inference:8000' has no host name"),
    ("run", ["inference.engine=openai", "inference.base_urls=[http://127.0.0.1:9]",
             "inference.weight_sync=nccl", "inference.nccl_master=trainer"],
     "nexrl: inference.nccl_master: must be 'host:port' (got 'trainer')"),
    ("run", ["launch_mode=ray", "ray.colocate={main:[trainer,rollout]}", "rollout.num_workers=2"],
     "nexrl: ray.colocate.main: roles ['trainer', 'rollout'] must have the same number of actors"),
    ("run", ["launch_mode=ray", "ray.trainer_ranks=2", "ray.trainer_failure=restart-from-checkpoint"],
     "nexrl: ray.trainer_failure: restart-from-checkpoint replaces one trainer actor"),
    ("serve-trainer --port 0 --device cuda:99", [], "nexrl: --device: 'cuda:99', but torch sees "),
    ("serve-trainer --port 0", ["model.kind=hf", "model.path={tmp}/no-model"], "nexrl: model.path: "),
    ("serve-trainer --port 0", ["trainer.type=nope.py:X"], "nexrl: trainer.type: "),
]


def start_args(command: str, overrides: list[str], tmp_path: Path) -> list[str]:
    """The nexrl arguments of a START_ERRORS case; its folder holds a file and a broken evaluator."""
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    rest = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    return [*command.split(), "-c", str(RECIPE), *SMALL, f"output_dir={tmp_path}/out", *rest]


START_IDS = [" ".join([command, *overrides]) for command, overrides, _ in START_ERRORS]


@pytest.mark.parametrize(("command", "overrides", "said"), START_ERRORS, ids=START_IDS)
def test_config_errors_found_at_start_up_are_words_and_exit_2(
    command: str, overrides: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each config error a module finds while `nexrl run` / `serve-trainer` starts, through the CLI's
    main (in this process, to keep it fast): exit 2, stderr starts with `nexrl: <field>: `, no
    exception escapes, no step is run."""
    assert main(start_args(command, overrides, tmp_path)) == 2
    assert capsys.readouterr().err.startswith(said)
    assert not list(tmp_path.glob("**/metrics.jsonl"))  # refused before any step


@pytest.mark.parametrize("case", [0, 10, 20], ids=lambda i: START_IDS[i])
def test_the_nexrl_process_says_the_same_and_exits_2(case: int, tmp_path: Path) -> None:
    """A few of them as a real `nexrl` process: the same first line, no traceback."""
    command, overrides, said = START_ERRORS[case]
    out = subprocess.run([*NEXRL, *start_args(command, overrides, tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert (out.returncode, "Traceback" in out.stderr) == (2, False), out.stderr[-3000:]
    assert out.stderr.startswith(said), out.stderr[-3000:]


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
