"""Prometheus metrics of the operator (prometheus-client), served by ``nexrl-operator run --metrics-port``.

Names: ``nexrl_quota_*`` per NexRLQuota (label ``quota``), ``nexrl_admission_wait_seconds`` (how
long jobs waited for their GPUs), ``nexrl_reconcile_errors_total`` (label ``handler``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .admission import QuotaUsage

REGISTRY = CollectorRegistry(auto_describe=True)
WAIT_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 12 * 3600, 24 * 3600, 7 * 24 * 3600)

QUOTA_GAUGES = {
    "in_use": Gauge("nexrl_quota_gpus_in_use", "GPUs held by the quota's admitted jobs", ["quota"],
                    registry=REGISTRY),
    "reserved": Gauge("nexrl_quota_gpus_reserved", "free GPUs held back for the quota's first queued jobs",
                      ["quota"], registry=REGISTRY),
    "running": Gauge("nexrl_quota_running_jobs", "admitted jobs of the quota", ["quota"], registry=REGISTRY),
    "queued": Gauge("nexrl_quota_queued_jobs", "jobs waiting for the quota's GPUs", ["quota"],
                    registry=REGISTRY),
    "rejected": Gauge("nexrl_quota_rejected_jobs", "jobs that never fit the quota", ["quota"],
                      registry=REGISTRY),
}
QUOTA_LIMIT = Gauge("nexrl_quota_gpus_limit", "the quota's total GPU limit (absent: unlimited)", ["quota"],
                    registry=REGISTRY)
QUEUED_JOBS = Gauge("nexrl_queued_jobs", "NexRLJobs waiting for GPUs (any quota or ResourceQuota)",
                    registry=REGISTRY)
ADMISSION_WAIT = Histogram("nexrl_admission_wait_seconds", "time from a job's creation (or the end of its "
                           "suspension) to its admission", buckets=WAIT_BUCKETS, registry=REGISTRY)
HANDLER_RUNS = Counter("nexrl_handler_runs_total", "runs of each job handler (create, update, status, ...)",
                       ["handler"], registry=REGISTRY)
RECONCILE_ERRORS = Counter("nexrl_reconcile_errors_total", "handler runs and admission passes that failed",
                           ["handler"], registry=REGISTRY)

_shown: set[str] = set()
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def show_quotas(usages: Iterable[QuotaUsage], limits: dict[str, int | None], queued: int) -> None:
    """Set the per-quota gauges from an admission plan; quotas that are gone lose their series."""
    names = set()
    for usage in usages:
        names.add(usage.name)
        for field, gauge in QUOTA_GAUGES.items():
            gauge.labels(usage.name).set(getattr(usage, field))
        limit = limits.get(usage.name)
        if limit is None:
            _remove(QUOTA_LIMIT, usage.name)
        else:
            QUOTA_LIMIT.labels(usage.name).set(limit)
    for gone in _shown - names:
        for gauge in (*QUOTA_GAUGES.values(), QUOTA_LIMIT):
            _remove(gauge, gone)
    _shown.clear()
    _shown.update(names)
    QUEUED_JOBS.set(queued)


def _remove(gauge: Gauge, quota: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(quota)


def counted(handler: str) -> Callable[[F], F]:
    """Count the runs of an async handler (``nexrl_handler_runs_total``) and its exceptions
    (``nexrl_reconcile_errors_total``, re-raised)."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        async def run(*args: Any, **kwargs: Any) -> Any:
            HANDLER_RUNS.labels(handler).inc()
            try:
                return await fn(*args, **kwargs)
            except Exception:
                RECONCILE_ERRORS.labels(handler).inc()
                raise
        return run  # type: ignore[return-value]
    return wrap


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
