"""Operator-wide constants that the entry point (``main``) and the handlers both read.

A module of its own (no imports) so that neither of them imports the other for them.
"""

from __future__ import annotations

PREFIX = "nexrl.io"
"""Prefix of the operator's finalizer and of kopf's progress and diff-base annotations."""
DEFAULT_STATUS_INTERVAL = 5.0
"""Seconds between status refreshes of a job (``--status-interval``)."""
RETRY_DELAY = 5.0
"""Seconds before a failed API write (a child, a status) is tried again."""
WORKLOADS = (("ray.io", "v1", "rayjobs"), ("apps", "v1", "deployments"), ("apps", "v1", "statefulsets"))
"""(group, version, plural) of the workload children: indexed by the handlers, label-filtered watches."""
