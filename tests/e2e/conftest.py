"""Make the emulator modules importable whatever pytest's import mode is; the shared emulator fixture."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import EmulatorThread


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorThread]:
    """One API emulator per test module, with the NexRL CRDs installed (modules may override it)."""
    with EmulatorThread() as thread:
        thread.install_crds()
        yield thread
