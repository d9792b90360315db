"""pytest plugin for tests/helm/test_rbac.py: write every request that the API emulators of a session
saw to the JSON-lines file $NEXRL_RECORD_CALLS (one `apiserver_model.Call` per line)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Generator
from typing import Any

import pytest

_emulators: list[Any] = []


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any],
                         request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    value = yield
    if hasattr(value, "emu") and value not in _emulators:  # harness.EmulatorThread
        _emulators.append(value)
    return value


def pytest_sessionfinish(session: pytest.Session) -> None:
    with open(os.environ["NEXRL_RECORD_CALLS"], "w") as out:
        for thread in _emulators:
            for call in thread.emu.calls:
                out.write(json.dumps(dataclasses.asdict(call)) + "\n")
