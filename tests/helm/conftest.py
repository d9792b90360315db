"""Fixtures of the chart tests: a real helm (fetched by scripts/get_tools.sh, never skipped), a validator."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "e2e")]  # helmchart; the e2e emulator and harness

from helmchart import CHART, Helm, get_tool  # noqa: E402


def oldest_kubernetes() -> str:
    """The chart's minimum Kubernetes (Chart.yaml kubeVersion), the version the operator tests pin too."""
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    match = re.match(r">=\s*(\d+\.\d+)", constraint)
    assert match, constraint
    return match.group(1)


@pytest.fixture(scope="session")
def helm() -> Helm:
    try:
        return Helm(get_tool("helm"))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def validate() -> Callable[[dict[str, Any]], None]:
    """Strict kubernetes-validate of a core object at the chart's oldest Kubernetes."""
    version = oldest_kubernetes()

    def check(obj: dict[str, Any]) -> None:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{obj['kind']} {obj['metadata'].get('name')}: {exc.message}") from None

    return check
