"""`nexrl` itself: --help exits 0, a usage error exits 2, and a bad config fails first thing (exit 2,
`nexrl: <field>: ...`, before torch is imported), which a RayJob shows as a failed run within seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nexrl_runtime.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["run", "--help"], ["serve-trainer", "--help"]])
def test_help_prints_usage_and_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nexrl")
    if argv[0] != "--help" and argv[0] != "-h":
        assert "--config" in out and "--cluster" in out


def test_no_command_or_an_unknown_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: nexrl" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


CHECK = """
import sys
sys.modules["torch"] = None  # any import of torch now fails: the config is checked before it
from nexrl_runtime.cli import main
sys.exit(main(["run", "-c", sys.argv[1], "--cluster", sys.argv[2], "trainer.optim.lr=-1"]))
"""


def test_a_bad_config_fails_first_thing_with_exit_2(tmp_path: Path) -> None:
    recipe = tmp_path / "config.yaml"
    recipe.write_text("data: {path: d.jsonl}\nrollout: {evaluator: 'ev.py:E'}\ntrainer: {bogus: 1}\n")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("trainer: {nodes: 1, gpus_per_node: 1}\n")
    done = subprocess.run([sys.executable, "-c", CHECK, str(recipe), str(cluster)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("nexrl: invalid config:\n")
    assert "  trainer.bogus: unknown field" in done.stderr.splitlines()
    assert "  trainer.optim.lr: must be greater than 0.0 (got -1)" in done.stderr.splitlines()
    assert "Traceback" not in done.stderr


def test_the_installed_script_prints_help() -> None:
    script = Path(sys.executable).with_name("nexrl")
    done = subprocess.run([str(script) if script.exists() else "nexrl", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: nexrl")
