"""The box's modules on sys.path, and the one box of a test module (see box.py, docs/box.md)."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from box import Box
from twins import CHART_VALUES


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """One box per module; after it, no network namespace, bridge or pod process of it is left."""
    with Box(tmp_path_factory.mktemp("box"), chart_values=CHART_VALUES) as the_box:
        yield the_box
        made = [p.netns for p in the_box.pods()]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [ns for ns in made if ns in listed]
    bridge = subprocess.run(["ip", "link", "show", the_box.bridge.name], capture_output=True).returncode == 0
    assert not left and not bridge, f"the box left network namespaces {left} (bridge left: {bridge})"
