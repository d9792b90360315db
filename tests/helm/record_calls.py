"""pytest plugin: keep the request log of every API emulator a session starts (tests/e2e), for the
chart's RBAC test. Loaded for the whole suite by tests/conftest.py, so that in a full run
tests/helm/test_rbac.py judges the e2e scenarios that already ran instead of running them again;
with $NEXRL_RECORD_CALLS set, the calls are also written there (JSON lines) at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

E2E = Path(__file__).resolve().parents[1] / "e2e"
NOT_OPERATOR = {"test_apiserver.py"}  # the emulator's own tests
_emulators: list[Any] = []
_passed: set[str] = set()
_deselected: list[str] = []


def e2e_files() -> set[Path]:
    """The test files of the operator's end-to-end scenarios."""
    return {path for path in E2E.glob("test_*.py") if path.name not in NOT_OPERATOR}


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any],
                         request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    value = yield
    harness = sys.modules.get("harness")  # tests/e2e/harness.py, imported by whoever starts an emulator
    if harness and isinstance(value, harness.EmulatorThread) and all(value is not e for e in _emulators):
        _emulators.append(value)
    return value


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.extend(item.nodeid for item in items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.passed and report.when == "call":
        _passed.add(report.nodeid)


def calls() -> list[Any]:
    """Every request the emulators of this session have seen so far (``apiserver_model.Call``)."""
    return [call for thread in _emulators for call in thread.emu.calls]


def complete_e2e_run(session: pytest.Session) -> bool:
    """Whether every e2e scenario was selected in this session and has already passed."""
    items = [item for item in session.items if Path(str(item.path)) in e2e_files()]
    files = {Path(str(item.path)) for item in items}
    skipped = [
        nodeid for nodeid in _deselected if any(nodeid.startswith(f"tests/e2e/{f.name}") for f in files)
    ]
    return bool(items) and files == e2e_files() and not skipped and all(i.nodeid in _passed for i in items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("NEXRL_RECORD_CALLS")
    if path:
        with open(path, "w") as out:
            for call in calls():
                out.write(json.dumps(dataclasses.asdict(call)) + "\n")
