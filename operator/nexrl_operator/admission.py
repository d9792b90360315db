"""Pure GPU admission: jobs + NexRLQuotas + namespace ResourceQuotas -> admit / queue / reject.

One ``plan`` call looks at everything at once and is cheap enough to repeat on every change
(see bench/admission_bench.py). The policy, also in docs/admin.md ("How jobs are admitted"):

* **Gang**: a job is admitted only when ALL its GPUs fit every limit that applies to it (its
  quota's total, every GPU type it could land on, its namespace's ResourceQuotas, the quota's
  running-job slots). Admitted jobs keep their GPUs until they finish or are suspended: a lower
  limit never takes GPUs back, it only makes new jobs wait.
* **Governing quota**: a namespace belongs to the oldest NexRLQuota that selects it (by creation
  time, then name); namespaces no quota selects are limited by their ResourceQuotas only.
* **Order** within a quota: the namespace with the highest ``priority`` first; among equal
  priorities the namespace with the smallest share (GPUs held / ``weight``) first; within a
  namespace by the job's ``queuePriority``, then creation time. Across namespaces of equal
  priority and share, the older job first.
* **No overtaking** (reservation): a job that does not fit holds back, in every pool it draws
  from, the free GPUs it needs (and a running-job slot), so jobs behind it only get what is left.
  GPUs freed by finishing jobs thus go to the first job in line: a large job is never starved
  by a stream of small ones. A job blocked only by its own namespace's ResourceQuota holds back
  GPUs of that namespace only, so it never stalls other teams.
* **Never fits** (more than maxGpusPerJob, a total, type or ResourceQuota limit): rejected,
  with the limit in the message. Re-evaluated on every pass: raising the limit brings it back.
* **Stable**: a plan admits until nothing more fits, so planning again on its result admits
  nothing (see ``plan``); a job never waits in one reconcile and is admitted in the next.
* **Scale-up** of an admitted job (``inference.replicas``) waits in line like a new job for the
  GPUs it adds; until then the job keeps the GPUs it was admitted for.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import heapq
from collections.abc import Iterable, Mapping, Sequence

from .api import GPU_RESOURCE
from .quota_api import GpuType, NexRLQuotaSpec

SLOTS = "running jobs"


@dataclasses.dataclass(frozen=True)
class Demand:
    """What admission needs to know about one active job (not finished, not suspended, valid)."""

    uid: str
    namespace: str
    name: str
    created: str
    """creationTimestamp (RFC 3339, so strings sort by time)"""
    gpus: int
    priority: int = 0
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    resource: str = GPU_RESOURCE
    admitted: int | None = None
    """GPUs the job holds (admitted earlier); None while it waits"""
    running: bool = False
    """all its pods exist (phase Running): the namespace's ResourceQuota already counts them"""


@dataclasses.dataclass(frozen=True)
class Quota:
    name: str
    created: str
    spec: NexRLQuotaSpec


@dataclasses.dataclass(frozen=True)
class ResourceQuotaLimit:
    """One ``requests.<resource>`` line of a namespace's ResourceQuota."""

    namespace: str
    name: str
    resource: str
    hard: int
    used: int


class State(enum.StrEnum):
    ADMITTED = "Admitted"
    QUEUED = "Queued"
    REJECTED = "Rejected"


@dataclasses.dataclass(frozen=True)
class Decision:
    state: State
    gpus: int
    """ADMITTED: the GPUs the job may hold; otherwise the GPUs it asks for"""
    message: str
    quota: str | None = None
    new: bool = False
    """admitted, or its scale-up admitted, by this plan"""
    pending: str | None = None
    """ADMITTED with a scale-up that waits or can never fit: why"""


@dataclasses.dataclass
class QuotaUsage:
    """What a NexRLQuota's status shows."""

    name: str
    namespaces: list[str]
    in_use: int = 0
    reserved: int = 0
    running: int = 0
    queued: int = 0
    rejected: int = 0
    types: list[tuple[str, int, int, int]] = dataclasses.field(default_factory=list)
    """(name, limit, in use, reserved) per GPU type"""
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def message(self) -> str | None:
        return "; ".join(self.notes) or None


@dataclasses.dataclass(frozen=True)
class Plan:
    decisions: dict[str, Decision]
    """job uid -> decision, for every Demand given"""
    quotas: dict[str, QuotaUsage]


@dataclasses.dataclass
class Pool:
    """Something with a limit that jobs draw from: GPUs of a quota or type, a ResourceQuota, job slots."""

    where: str
    what: str
    limit: int
    shared: bool = True
    """quota-wide (holding back here stalls other namespaces) rather than one namespace's own"""
    used: int = 0
    reserved: int = 0
    type_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def available(self) -> int:
        return self.limit - self.used - self.reserved


@dataclasses.dataclass
class _Item:
    demand: Demand
    need: int
    new: bool
    """a whole job (needs a slot) rather than a running job's scale-up"""
    pools: list[tuple[Pool, int]] = dataclasses.field(default_factory=list)
    """(pool, amount) it draws from"""

    @property
    def key(self) -> tuple[int, str, str]:
        return (-self.demand.priority, self.demand.created, self.demand.name)


def could_land(gpu_type: GpuType, demand: Demand) -> bool:
    """A job counts against a GPU type it asks for whose node labels its nodeSelector allows."""
    if gpu_type.resource != demand.resource:
        return False
    return all(demand.node_selector.get(key, value) == value for key, value in gpu_type.node_labels.items())


def selecting(quotas: Iterable[Quota], namespaces: Mapping[str, Mapping[str, str]]
              ) -> dict[str, list[Quota]]:
    """namespace -> the quotas that select it, oldest first (creation time, then name); the first governs."""
    out: dict[str, list[Quota]] = {ns: [] for ns in namespaces}
    for quota in sorted(quotas, key=lambda q: (q.created, q.name)):
        listed, selector = set(quota.spec.namespaces), quota.spec.namespace_selector
        for ns, labels in namespaces.items():
            if ns in listed or (selector is not None and selector.matches(labels)):
                out[ns].append(quota)
    return out


def _ahead(n: int) -> str:
    return "no jobs ahead" if n == 0 else "1 job ahead" if n == 1 else f"{n} jobs ahead"


class _Group:
    """The jobs of one quota (or of one namespace no quota selects) and the pools they draw from."""

    def __init__(self, quota: Quota | None, rq_pools: Mapping[tuple[str, str], list[Pool]]) -> None:
        self.quota = quota
        self.rq_pools = rq_pools
        self.jobs: list[Demand] = []
        spec = quota.spec if quota else None
        where = f"quota {quota.name}" if quota else ""
        self.total = Pool(where, GPU_RESOURCE, spec.gpus) if spec and spec.gpus is not None else None
        self.types = [(t, Pool(where, f"{t.resource} of type {t.name}", t.gpus, type_labels=t.node_labels))
                      for t in (spec.gpu_types if spec else [])]
        self.slots = (Pool(where, SLOTS, spec.max_running_jobs)
                      if spec and spec.max_running_jobs is not None else None)
        self.usage: dict[str, int] = collections.Counter()
        listed = spec.namespace_settings if spec else []
        self.settings = {s.namespace: (s.priority, s.weight) for s in listed}

    def gpu_pools(self, demand: Demand) -> list[Pool]:
        pools = [self.total] if self.total and demand.resource == GPU_RESOURCE else []
        pools += [pool for gpu_type, pool in self.types if could_land(gpu_type, demand)]
        return pools + list(self.rq_pools.get((demand.namespace, demand.resource), ()))

    def item(self, demand: Demand, need: int, new: bool) -> _Item:
        pools = [(pool, need) for pool in self.gpu_pools(demand)]
        return _Item(demand, need, new, pools + ([(self.slots, 1)] if self.slots and new else []))

    def never_fits(self, item: _Item) -> str | None:
        demand = item.demand
        what = f"{demand.gpus} {demand.resource}"
        spec = self.quota.spec if self.quota else None
        if spec and spec.max_gpus_per_job is not None and demand.gpus > spec.max_gpus_per_job:
            return (f"needs {what}, more than quota {self.quota.name} allows per job "  # type: ignore[union-attr]
                    f"(maxGpusPerJob: {spec.max_gpus_per_job})")
        for pool, _ in item.pools:
            if pool.what != SLOTS and demand.gpus > pool.limit:
                hint = ""
                if pool.type_labels and not set(pool.type_labels) & set(demand.node_selector):
                    hint = "; set scheduling.nodeSelector to pick another GPU type"
                return (f"needs {demand.gpus} {pool.what}, more than {pool.where} allows in all "
                        f"({pool.limit}){hint}")
        return None

    def hold(self, demand: Demand) -> None:
        held = demand.admitted or 0
        for pool in self.gpu_pools(demand):
            pool.used += held
        if self.slots:
            self.slots.used += 1
        self.usage[demand.namespace] += held

    def order_key(self, namespace: str, head: _Item) -> tuple[int, float, str, str]:
        priority, weight = self.settings.get(namespace, (0, 1))
        return (-priority, self.usage[namespace] / weight, head.demand.created, namespace)


def _blocked(item: _Item, pool: Pool, amount: int, ahead: int) -> str:
    if pool.what == SLOTS:
        text = f"{pool.where} runs at most {pool.limit} jobs at a time and {pool.used} are admitted"
    else:
        held = min(pool.reserved, pool.free)
        extra = f" ({held} held for jobs ahead)" if held else ""
        more = "" if item.new else "more "
        text = f"needs {amount} {more}{pool.what}, {pool.where} has {pool.free} of {pool.limit} free{extra}"
    return ("" if item.new else "scale-up ") + f"{text}; {_ahead(ahead)}"


def admitted_message(quota: str | None, demand: Demand, gpus: int) -> str:
    """What an admitted job's Admitted condition says."""
    if quota is None:
        return f"admitted: no NexRLQuota covers namespace {demand.namespace}"
    return f"admitted by quota {quota}: {gpus} {demand.resource}"


def _admitted(group: _Group, demand: Demand, gpus: int) -> str:
    return admitted_message(group.quota.name if group.quota else None, demand, gpus)


def _serve(group: _Group, items: list[_Item], decisions: dict[str, Decision], usage: QuotaUsage | None
           ) -> None:
    """Admit or queue the waiting items of a group in policy order, holding back GPUs for blocked ones."""
    queues: dict[str, collections.deque[_Item]] = {}
    for item in sorted(items, key=lambda i: i.key):
        queues.setdefault(item.demand.namespace, collections.deque()).append(item)
    # Only the namespace served changes its key (its share and its head), so a heap stays true.
    heads = [group.order_key(ns, queue[0]) for ns, queue in queues.items()]
    heapq.heapify(heads)
    quota = group.quota.name if group.quota else None
    ahead = 0
    while heads:
        namespace = heapq.heappop(heads)[-1]
        item = queues[namespace].popleft()
        demand, pools = item.demand, item.pools
        blocked = [(pool, amount) for pool, amount in pools if amount and pool.available < amount]
        if not blocked:
            for pool, amount in pools:
                pool.used += amount
            group.usage[namespace] += item.need
            gpus = (demand.admitted or 0) + item.need
            message = _admitted(group, demand, gpus)
            decisions[demand.uid] = Decision(State.ADMITTED, gpus, message, quota, new=True)
        else:
            _queue(item, blocked, ahead, decisions, quota, usage)
            ahead += 1
        if queues[namespace]:
            heapq.heappush(heads, group.order_key(namespace, queues[namespace][0]))


def _queue(item: _Item, blocked: list[tuple[Pool, int]], ahead: int, decisions: dict[str, Decision],
           quota: str | None, usage: QuotaUsage | None) -> None:
    """A waiting item: say why, and hold back what it needs of what is free."""
    demand = item.demand
    why = _blocked(item, *blocked[0], ahead)
    shared = any(pool.shared for pool, _ in blocked)
    for pool, amount in item.pools:
        if shared or not pool.shared:
            pool.reserved += max(0, min(amount, pool.available))
    if not item.new:
        decisions[demand.uid] = dataclasses.replace(decisions[demand.uid], pending=why)
        return
    decisions[demand.uid] = Decision(State.QUEUED, demand.gpus, why, quota)
    if usage is not None and usage.queued == 0:
        usage.notes.insert(0, f"first in line: {demand.namespace}/{demand.name}: {why.split(';')[0]}")
    if usage is not None:
        usage.queued += 1


def _rq_pools(limits: Sequence[ResourceQuotaLimit], jobs: Sequence[Demand]
              ) -> dict[tuple[str, str], list[Pool]]:
    """(namespace, resource) -> a pool per ResourceQuota, used = status.used minus the GPUs of held
    jobs it already counts (those running), so that adding every held job counts each exactly once."""
    settled: dict[tuple[str, str], int] = collections.Counter()
    for demand in jobs:
        if demand.admitted is not None and demand.running:
            settled[demand.namespace, demand.resource] += demand.admitted
    pools: dict[tuple[str, str], list[Pool]] = {}
    for rq in limits:
        key = (rq.namespace, rq.resource)
        where = f"ResourceQuota {rq.name} in namespace {rq.namespace}"
        pool = Pool(where, rq.resource, rq.hard, shared=False, used=max(0, rq.used - settled[key]))
        pools.setdefault(key, []).append(pool)
    return pools


def plan(jobs: Sequence[Demand], quotas: Sequence[Quota], namespaces: Mapping[str, Mapping[str, str]],
         limits: Sequence[ResourceQuotaLimit] = ()) -> Plan:
    """Decide every job at once (see the module docstring for the policy).

    ``namespaces``: name -> labels of the namespaces known (for ``namespaceSelector``); namespaces
    of jobs and quota lists are added. ``limits``: the ``requests.<GPU resource>`` ResourceQuotas.
    """
    labels = {ns: {**dict(lbl), "kubernetes.io/metadata.name": ns} for ns, lbl in namespaces.items()}
    for name in [d.namespace for d in jobs] + [ns for q in quotas for ns in q.spec.namespaces]:
        labels.setdefault(name, {"kubernetes.io/metadata.name": name})
    selected = selecting(quotas, labels)
    owner = {ns: found[0] for ns, found in selected.items() if found}
    members: dict[str, list[Demand]] = {q.name: [] for q in quotas}
    for demand in jobs:
        quota = owner.get(demand.namespace)
        members.setdefault(quota.name if quota else f"/{demand.namespace}", []).append(demand)
    governed: dict[str, list[str]] = collections.defaultdict(list)
    for ns, quota in sorted(owner.items()):
        governed[quota.name].append(ns)
    notes: dict[str, list[str]] = collections.defaultdict(list)
    for ns, found in sorted(selected.items()):
        for shadowed in found[1:]:
            notes[shadowed.name].append(f"namespace {ns} is governed by the older quota {found[0].name}")
    by_name = {q.name: q for q in quotas}
    decisions: dict[str, Decision] = {}
    usages: dict[str, QuotaUsage] = {}
    for key, group_jobs in members.items():
        quota = by_name.get(key)
        usage = QuotaUsage(quota.name, governed[quota.name], notes=notes[quota.name]) if quota else None
        own = {d.namespace for d in group_jobs}
        decided, settled = _settle(quota, group_jobs, [rq for rq in limits if rq.namespace in own], usage)
        decisions.update(decided)
        if quota is not None and settled is not None:
            usages[quota.name] = settled
    return Plan(decisions, usages)


def _settle(quota: Quota | None, jobs: Sequence[Demand], limits: Sequence[ResourceQuotaLimit],
            usage: QuotaUsage | None) -> tuple[dict[str, Decision], QuotaUsage | None]:
    """The decisions of one group (a quota's jobs, or one unquota'd namespace's), and its usage.

    Passes repeat, each holding what the ones before admitted, until a pass admits nothing: an
    admission raises its namespace's share, which can reorder the queue behind it, so one pass
    alone is not stable (the next reconcile would admit more). The result is a fixpoint: planning
    again on it admits nothing. ResourceQuotas count what the jobs held as observed (``jobs``).
    """
    current, admitted_here = list(jobs), set()
    while True:
        group = _Group(quota, _rq_pools(limits, jobs))
        group.jobs = current
        this = dataclasses.replace(usage, notes=list(usage.notes)) if usage is not None else None
        decisions: dict[str, Decision] = {}
        _decide_group(group, decisions, this)
        fresh = {uid for uid, decision in decisions.items() if decision.new}
        if not fresh:
            break
        admitted_here |= fresh
        current = [dataclasses.replace(d, admitted=decisions[d.uid].gpus) if d.uid in fresh else d
                   for d in current]
    for uid in admitted_here:
        decisions[uid] = dataclasses.replace(decisions[uid], new=True)
    return decisions, this


def _decide_group(group: _Group, decisions: dict[str, Decision], usage: QuotaUsage | None) -> None:
    quota = group.quota.name if group.quota else None
    waiting: list[_Item] = []
    for demand in group.jobs:
        if demand.admitted is not None:
            group.hold(demand)
            held = min(demand.admitted, demand.gpus)  # a scale-down gives GPUs back at once
            decisions[demand.uid] = Decision(State.ADMITTED, held, _admitted(group, demand, held), quota)
            held = demand.admitted
            if demand.gpus > held:
                waiting.append(group.item(demand, demand.gpus - held, new=False))
        else:
            waiting.append(group.item(demand, demand.gpus, new=True))
    items = []
    for item in waiting:
        reason = group.never_fits(item)
        if reason is None:
            items.append(item)
        elif item.new:
            decisions[item.demand.uid] = Decision(State.REJECTED, item.demand.gpus, reason, quota)
            if usage is not None:
                usage.rejected += 1
        else:
            decisions[item.demand.uid] = dataclasses.replace(decisions[item.demand.uid],
                                                             pending=f"scale-up {reason}")
    _serve(group, items, decisions, usage)
    if usage is not None:
        admitted = [decisions[d.uid] for d in group.jobs if decisions[d.uid].state is State.ADMITTED]
        usage.running, usage.in_use = len(admitted), sum(d.gpus for d in admitted)
        usage.reserved = group.total.reserved if group.total else sum(p.reserved for _, p in group.types)
        usage.types = [(t.name, p.limit, p.used, p.reserved) for t, p in group.types]
