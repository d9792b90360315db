"""Timestamps as the Kubernetes API writes them: RFC 3339, UTC, whole seconds (``2024-05-01T12:00:00Z``)."""

from __future__ import annotations

import datetime


def now() -> str:
    """The current time, as a status or condition timestamp."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_since(timestamp: str) -> float:
    """Seconds from ``timestamp`` until now (0 for a future or unreadable one)."""
    try:
        since = datetime.datetime.fromisoformat(timestamp)
    except ValueError:
        return 0.0
    return max(0.0, (datetime.datetime.now(datetime.UTC) - since).total_seconds())
