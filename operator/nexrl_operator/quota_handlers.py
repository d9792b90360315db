"""Thin kopf glue of GPU admission: indexes of what it reads, a kick on every change, the loop's life.

What admission decides is in ``admission`` (pure); the loop that applies it is ``admission_loop``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from .admission_loop import JOBS, NAMESPACES, QUOTAS, RESOURCE_QUOTAS, Admitter
from .api import GROUP, PLURAL, VERSION
from .quota_api import QUOTA_PLURAL
from .quota_views import JobView, QuotaView, job_view, quota_view, resource_quota_limits

JOB = (GROUP, VERSION, PLURAL)
QUOTA = (GROUP, VERSION, QUOTA_PLURAL)
RESOURCE_QUOTA = ("", "v1", "resourcequotas")
NAMESPACE = ("", "v1", "namespaces")


def index_job(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[str, JobView]:
    defaults = getattr(memo, "defaults", None)
    view = job_view(body, default_image=defaults.image if defaults is not None else None)
    return {view.uid: view}


def index_quota(body: kopf.Body, **_: Any) -> dict[str, QuotaView]:
    view = quota_view(body)
    return {view.name: view}


def index_resource_quota(body: kopf.Body, **_: Any) -> dict[str, Any] | None:
    limits = resource_quota_limits(body)
    return {body["metadata"]["namespace"]: limits} if limits else None


def index_namespace(body: kopf.Body, **_: Any) -> dict[str, dict[str, str]]:
    return {body["metadata"]["name"]: dict(body["metadata"].get("labels") or {})}


async def kick(memo: kopf.Memo, **kwargs: Any) -> None:
    """Any change to what admission reads: plan again (the indexes already hold the change)."""
    memo.admitter.attach(kwargs)
    memo.admitter.kick()


def register(registry: kopf.OperatorRegistry, status_interval: float, quotas: bool = True) -> None:
    """Attach admission to ``registry`` (after the job handlers: the startup needs ``memo.kube``).

    ``quotas=False`` (``--no-quotas``): no NexRLQuota or Namespace watches, for an operator that
    may not read cluster-scoped objects; namespaces' ResourceQuotas still apply.
    """
    async def start(memo: kopf.Memo, **_: Any) -> None:
        memo.admitter = Admitter(memo.kube, status_interval=status_interval)
        memo.admission_loop = asyncio.create_task(memo.admitter.run(), name="admission")

    async def stop(memo: kopf.Memo, **_: Any) -> None:
        memo.admission_loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await memo.admission_loop

    kopf.on.startup(registry=registry)(start)
    kopf.on.cleanup(registry=registry)(stop)
    watched = [(JOB, JOBS, index_job), (RESOURCE_QUOTA, RESOURCE_QUOTAS, index_resource_quota)]
    if quotas:
        watched += [(QUOTA, QUOTAS, index_quota), (NAMESPACE, NAMESPACES, index_namespace)]
    for resource, index_id, indexer in watched:
        kopf.index(*resource, id=index_id, registry=registry)(indexer)
        kopf.on.event(*resource, id=f"admission-{index_id}", registry=registry)(kick)
