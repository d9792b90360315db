"""One real local Ray for the whole test session (2 CPUs, one logical GPU for the placement-group
path, a custom resource), started by the runtime's own driver code; at the end it is shut down and
its raylet and GCS must be gone."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexrl_runtime.config import load_config
from nexrl_runtime.config.schema import NexRLConfig
from tests.integration.conftest import RECIPE
from tests.integration.test_sync_modes import SMALL

SESSION = ["ray.num_cpus=2", "ray.num_gpus=1", "ray.resources={nexrl_test:4}"]


def ray_config(tmp_path: Path, overrides: list[str]) -> NexRLConfig:
    """The arithmetic recipe, shortened, in Ray mode."""
    base = [f"output_dir={tmp_path}", "logging.progress_bar=false", "launch_mode=ray"]
    return load_config(RECIPE, [*base, *SMALL, *overrides])


def ray_children() -> dict[int, str]:
    """pid -> name of this process's live raylet / GCS children."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" ", 1)
        except OSError:
            continue
        name, fields = rest.rsplit(")", 1)
        state, ppid = fields.split()[:2]
        mine = int(ppid) == os.getpid() and state != "Z"  # a zombie has exited
        if mine and ("raylet" in name or "gcs_server" in name):
            out[int(pid)] = name.lstrip("(")
    return out


def wait_for(condition, timeout: float, what: str) -> None:
    """Poll `condition` until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    pytest.importorskip("ray")
    from nexrl_runtime.distributed import driver

    os.environ.pop("RAY_ADDRESS", None)
    assert driver.connect(ray_config(tmp_path_factory.mktemp("ray"), SESSION)), "Ray was already up"
    daemons = ray_children()
    assert any("raylet" in n for n in daemons.values()), daemons
    yield
    driver.shutdown()
    wait_for(lambda: not set(daemons) & set(ray_children()), 30, f"Ray daemons {daemons} to exit")


@pytest.fixture
def pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Two inference replicas behind one Service name (tests/distributed/replicas.py)."""
    from tests.distributed.replicas import running_pods

    yield from running_pods(tmp_path, monkeypatch)
