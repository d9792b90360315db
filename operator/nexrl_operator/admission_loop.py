"""The admission loop: keeps job admissions and NexRLQuota statuses true, driven by watch events.

Inputs are kopf indexes (digests from ``quota_views``) of every NexRLJob, NexRLQuota, ResourceQuota
and Namespace; every change kicks the loop, which runs ``admission.plan`` over all of them (bursts
coalesce into one pass) and then:

* admits waiting jobs that now fit by writing ``status.admittedGpus``; a kopf event handler sees
  the change and creates the children (``handlers.on_admitted``);
* writes the status of waiting jobs (Queued / Failed QuotaExceeded and why; message-only
  changes at most once per status interval per job, so that a long queue does not flood the API);
* writes each NexRLQuota's status and the metrics.

The job handlers call ``decide`` for the job they handle (a new job that fits starts at once).
Admissions are committed in memory before any write goes out (``committed``), so that neither
the loop nor a handler admits on a stale index what another has just admitted: the operator is
the one writer (standalone, or the active peer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

from . import metrics, timestamps
from .admission import Decision, Demand, Plan, State, admitted_message, plan, selecting
from .api import API_VERSION, KIND
from .job_status import Observation, desired_status, find_condition, status_patch
from .kube import ApiError, Kube
from .quota_api import QUOTA_KIND
from .quota_views import JobView, QuotaView, quota_status
from .settings import RETRY_DELAY

logger = logging.getLogger(__name__)

# kopf index ids (they are also handler kwargs)
JOBS, QUOTAS = "nexrl_jobs", "nexrl_quotas"
RESOURCE_QUOTAS, NAMESPACES = "resource_quotas", "namespace_labels"
DEBOUNCE = 0.05
READMITTED = ("; the job ran before it was suspended, and a job that is unsuspended is admitted again "
              "like a new one: this limit was set or lowered after it was admitted (shrink the job, or "
              "raise the limit)")
"""Said after the rejection of a job that ran, was suspended and no longer fits (docs/admin.md)."""


def explain(view: JobView, decision: Decision) -> Decision:
    """The decision, with ``READMITTED`` added to the rejection of a job that ran before it was
    suspended (its children exist, and it has a Suspended condition): what changed is the limit."""
    status = view.status
    ran = bool(status.get("children")) and bool(find_condition(status, "Suspended"))
    if decision.state is not State.REJECTED or not ran:
        return decision
    return dataclasses.replace(decision, message=decision.message + READMITTED)


class Admitter:
    """Admission state of the operator process; see the module docstring."""

    def __init__(self, kube: Kube, *, status_interval: float, debounce: float = DEBOUNCE) -> None:
        self.kube, self.status_interval, self.debounce = kube, status_interval, debounce
        self.indexes: dict[str, Mapping[str, Any]] | None = None
        self.committed: dict[str, int] = {}
        """job uid -> GPUs admitted but maybe not in the index yet"""
        self._kicked = asyncio.Event()
        self._version = 0
        self._cache: tuple[int, Plan] | None = None
        self._written: dict[str, float] = {}

    # --- inputs ------------------------------------------------------------------------------------

    def attach(self, indexes: Mapping[str, Any]) -> None:
        """Keep the (live) kopf indexes; handlers receive them as kwargs."""
        if self.indexes is None and JOBS in indexes:
            self.indexes = {key: indexes[key] for key in (JOBS, QUOTAS, RESOURCE_QUOTAS, NAMESPACES)
                            if key in indexes}

    def kick(self) -> None:
        """Something admission reads has changed: plan again soon."""
        self._version += 1
        self._kicked.set()

    def _values(self, key: str) -> list[Any]:
        index = (self.indexes or {}).get(key, {})
        return [value for store in index.values() for value in store]

    def views(self) -> dict[str, JobView]:
        return {view.uid: view for view in self._values(JOBS)}

    def quotas(self) -> dict[str, QuotaView]:
        return {view.name: view for view in self._values(QUOTAS)}

    def _namespaces(self) -> dict[str, dict[str, str]]:
        index = (self.indexes or {}).get(NAMESPACES, {})
        return {name: next(iter(store)) for name, store in index.items()}

    def _demands(self, views: Mapping[str, JobView]) -> list[Demand]:
        """The demands of active jobs, with admissions committed here but not yet in the index."""
        demands = []
        for uid, view in views.items():
            demand, held = view.demand, self.committed.get(uid)
            if demand is None or demand.admitted == held:
                self.committed.pop(uid, None)  # gone from admission, or its status says it now
            elif held is not None:
                demand = dataclasses.replace(demand, admitted=held)
            if demand is not None:
                demands.append(demand)
        for uid in set(self.committed) - views.keys():
            del self.committed[uid]  # deleted
        return demands

    # --- decisions ---------------------------------------------------------------------------------

    def compute(self, override: JobView | None = None) -> Plan:
        """The plan over everything indexed (``override`` replaces its job's entry); cached per change."""
        views = self.views()
        cacheable = override is None or views.get(override.uid) == override
        if cacheable and self._cache is not None and self._cache[0] == self._version:
            return self._cache[1]
        if override is not None:
            views[override.uid] = override
        quotas = [view.quota for view in self._values(QUOTAS) if view.quota is not None]
        limits = [limit for limits in self._values(RESOURCE_QUOTAS) for limit in limits]
        result = plan(self._demands(views), quotas, self._namespaces(), limits)
        if cacheable:
            self._cache = (self._version, result)
        return result

    def decide(self, view: JobView) -> Decision | None:
        """The decision for one job (None: it takes no part); an admission is committed at once."""
        demand = view.demand
        if demand is None:
            self.committed.pop(view.uid, None)
            return None
        held = self.committed.get(view.uid, demand.admitted)
        if held is not None and demand.gpus <= held:  # holds all it asks: no plan needed
            labels = self._namespaces().get(demand.namespace, {})
            quotas = [v.quota for v in self._values(QUOTAS) if v.quota is not None]
            found = selecting(quotas, {demand.namespace: labels})[demand.namespace]
            quota = found[0].name if found else None
            return Decision(State.ADMITTED, demand.gpus, admitted_message(quota, demand, demand.gpus), quota)
        decision = self.compute(view).decisions[view.uid]
        if decision.new:
            self._commit(view, decision)
        return explain(view, decision)

    def record(self, uid: str, gpus: int | None) -> None:
        """A handler is writing ``status.admittedGpus = gpus`` for a job."""
        if gpus is None:
            self.committed.pop(uid, None)
        else:
            self.committed[uid] = gpus

    def _commit(self, view: JobView, decision: Decision) -> None:
        self.committed[view.uid] = decision.gpus
        self._version += 1
        if view.demand is not None and view.demand.admitted is None:
            metrics.ADMISSION_WAIT.observe(timestamps.seconds_since(view.waiting_since))

    # --- the loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Plan after every kick until cancelled."""
        while True:
            await self._kicked.wait()
            self._kicked.clear()
            await asyncio.sleep(self.debounce)
            try:
                await self.pass_once()
            except Exception:
                logger.exception("admission pass failed; retrying in %ss", RETRY_DELAY)
                metrics.RECONCILE_ERRORS.labels("admission").inc()
                asyncio.get_running_loop().call_later(RETRY_DELAY, self.kick)

    async def pass_once(self) -> None:
        """One admission pass: admit, tell waiting jobs why, update the quotas' statuses and metrics."""
        if self.indexes is None:
            return
        result, views = self.compute(), self.views()
        for gone in set(self._written) - views.keys():
            del self._written[gone]
        # A job no handler has seen yet (no status) is left to its create handler, which decides it
        # at once; the plan still counts it where it admitted it, so nothing behind it gets its GPUs.
        handled = {uid for uid, view in views.items() if "observedGeneration" in view.status}
        admitted = [(views[uid], d) for uid, d in result.decisions.items() if d.new and uid in handled]
        for view, decision in admitted:  # before any await: a handler's plan must see these
            self._commit(view, decision)
        for view, decision in admitted:
            if not await self._patch_job(view, {"admittedGpus": decision.gpus}):
                self.committed.pop(view.uid, None)
        deferred = False
        for uid, decision in result.decisions.items():
            if decision.state is not State.ADMITTED and uid in handled and uid not in self.committed:
                deferred |= not await self._write_waiting(views[uid], explain(views[uid], decision))
        await self._write_quotas(result)
        queued = sum(1 for d in result.decisions.values() if d.state is State.QUEUED)
        limits = {name: view.quota.spec.gpus if view.quota else None for name, view in self.quotas().items()}
        metrics.show_quotas(result.quotas.values(), limits, queued)
        if deferred:
            asyncio.get_running_loop().call_later(self.status_interval, self.kick)

    async def _write_waiting(self, view: JobView, decision: Decision) -> bool:
        """Write a waiting job's status; False when a message-only change was put off (throttled)."""
        obs = Observation(view.generation, view.status, timestamps.now(), spec=view.spec,
                          restart_fields=view.restart_fields, admission=decision)
        changes = status_patch(view.status, desired_status(obs))
        if not changes:
            return True
        now = time.monotonic()
        if "phase" not in changes and now - self._written.get(view.uid, 0.0) < self.status_interval:
            return False
        self._written[view.uid] = now
        await self._patch_job(view, changes)
        return True

    async def _patch_job(self, view: JobView, status: Mapping[str, Any]) -> bool:
        stub = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"namespace": view.namespace,
                                                                      "name": view.name}}
        return await self._patch(stub, status)

    async def _write_quotas(self, result: Plan) -> None:
        for name, view in self.quotas().items():
            changes = status_patch(view.status, quota_status(result.quotas.get(name), view))
            if changes:
                await self._patch({"apiVersion": API_VERSION, "kind": QUOTA_KIND, "metadata": {"name": name}},
                                  changes)

    async def _patch(self, stub: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        try:
            await self.kube.patch(stub, {"status": dict(status)}, "status")
        except ApiError as exc:
            if exc.status != 404:  # 404: deleted meanwhile
                logger.warning("status of %s %s: %s; retrying in %ss", stub["kind"], stub["metadata"]["name"],
                               exc, RETRY_DELAY)
                metrics.RECONCILE_ERRORS.labels("admission").inc()
                asyncio.get_running_loop().call_later(RETRY_DELAY, self.kick)
            return False
        return True
