"""Suite-wide: hypothesis profiles, and the API emulators' request logs (tests/helm/record_calls.py),
kept so that the chart's RBAC test judges the e2e scenarios of the same run instead of running them
a second time.

Property tests run the ``ci`` profile unless ``HYPOTHESIS_PROFILE`` names another: derandomized
(the same examples every run, so the suite passes or fails by the code alone) and printing the
reproduction blob of a failure. ``HYPOTHESIS_PROFILE=wide`` is the random search with many more
examples (``scripts/property_search.sh``); whatever it finds goes back in as an ``@example``.
"""

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent / "helm"))

settings.register_profile("ci", max_examples=100, derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("wide", max_examples=5000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("record_calls")
