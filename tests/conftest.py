"""Suite-wide: keep the API emulators' request logs (tests/helm/record_calls.py), so that the chart's
RBAC test judges the e2e scenarios of the same run instead of running them a second time."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helm"))


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("record_calls")
