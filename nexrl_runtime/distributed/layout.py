"""Pure planning of the Ray layout: roles -> colocation groups -> actor options and GPU bundles.

No Ray import here: the plan is data, tested without a cluster. A group's actor asks for the sum
of its roles' requests; groups that ask for GPUs get placement-group bundles, one per actor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import NexRLConfig, RayRole

ROLE_ORDER = ("trainer", "engine", "rollout", "validator")
DEFAULT_CPUS = {"trainer": 1.0, "rollout": 0.5, "engine": 0.0, "validator": 0.0}


@dataclass(frozen=True)
class GroupPlan:
    """One colocation group: `count` actors, each hosting every role in `roles` except those in
    `first_only`, which live on actor 0 alone (the validator beside trainer rank 0)."""

    name: str
    roles: tuple[str, ...]
    count: int
    num_cpus: float
    num_gpus: float
    resources: dict[str, float] = field(default_factory=dict)
    first_only: tuple[str, ...] = ()

    def roles_of(self, index: int) -> tuple[str, ...]:
        """The roles actor `index` of this group hosts."""
        return tuple(r for r in self.roles if index == 0 or r not in self.first_only)

    @property
    def needs_bundle(self) -> bool:
        return self.num_gpus > 0

    @property
    def spread(self) -> bool:
        """Rollout actors are spread over nodes (the rollout worker pods)."""
        return "rollout" in self.roles and not self.needs_bundle

    def bundle(self) -> dict[str, float]:
        """The placement-group bundle of one actor of this group."""
        out = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return {k: v for k, v in out.items() if v > 0}


def trainer_ranks(config: NexRLConfig) -> int:
    """Trainer actors, one FSDP2 rank each: every GPU of the trainer pods in a cluster (nodes x
    GPUs per node), else `ray.trainer_ranks`."""
    t = config.cluster.trainer
    return t.nodes * t.gpus_per_node if t.nodes and t.gpus_per_node else config.ray.trainer_ranks


def check_trainer_ranks(config: NexRLConfig) -> None:
    """Refuse, before any actor starts, what a trainer of several ranks cannot do yet."""
    ranks = trainer_ranks(config)
    if ranks == 1 or config.mode == "training-service":
        return
    if config.ray.trainer_failure == "restart-from-checkpoint":
        raise ConfigError(
            f"ray.trainer_failure: restart-from-checkpoint replaces one trainer actor, not a group of "
            f"{ranks} ranks; use 'fail' (or one rank)"
        )


def role_request(config: NexRLConfig, role: str) -> RayRole:
    """The role's request from `ray.<role>`; in-cluster the trainer's GPUs are the pod limits':
    one per rank with several ranks, the node's all for a single rank."""
    request: RayRole = getattr(config.ray, role)
    update: dict[str, float] = {}
    if request.num_cpus is None:
        update["num_cpus"] = DEFAULT_CPUS[role]
    gpus = config.cluster.trainer.gpus_per_node
    if role == "trainer" and gpus > 0:
        update["num_gpus"] = 1.0 if trainer_ranks(config) > 1 else float(gpus)
    return request.model_copy(update=update)


def group_of(config: NexRLConfig) -> dict[str, str]:
    """role -> colocation group name (a role not listed is alone in a group named after it)."""
    out = {role: role for role in ROLE_ORDER}
    for group, roles in config.ray.colocate.items():
        for role in roles:
            out[role] = group
    return out


def rollout_workers(config: NexRLConfig) -> int:
    """Rollout actors: the operator's `cluster.rollout_workers` (spec.rollout.workers) in a cluster,
    else `rollout.num_workers`."""
    return config.cluster.rollout_workers or config.rollout.num_workers


def serves_over_http(config: NexRLConfig) -> bool:
    """Rollouts call OpenAI-compatible servers (`inference.engine: openai | vllm`): no engine actors."""
    return config.inference.engine != "local"


def role_counts(config: NexRLConfig, with_validator: bool) -> dict[str, int]:
    """Actors per role: one trainer (none in training-service mode), `rollout_workers` rollout
    workers, engines as `ray.engine_replicas` says (none when inference is served over HTTP)."""
    groups = group_of(config)
    workers = rollout_workers(config)
    engines = config.ray.engine_replicas or (workers if groups["engine"] == groups["rollout"] else 1)
    counts = {"trainer": trainer_ranks(config), "engine": engines, "rollout": workers, "validator": 1}
    if serves_over_http(config):
        del counts["engine"]
    if not with_validator:
        del counts["validator"]
    if config.mode == "training-service":  # the trainer is the service, not an actor
        del counts["trainer"]
    return counts


def plan_groups(config: NexRLConfig, with_validator: bool = True) -> list[GroupPlan]:
    """Colocation groups in a fixed order; roles of one group must have the same actor count."""
    counts = role_counts(config, with_validator)
    members: dict[str, list[str]] = {}
    for role, group in group_of(config).items():
        if role in counts:
            members.setdefault(group, []).append(role)
    plans = []
    for name, roles in members.items():
        sizes = {role: counts[role] for role in roles}
        first_only = ("validator",) if "trainer" in roles and "validator" in roles else ()
        if first_only:  # the validator rides on trainer rank 0, however many ranks there are
            sizes["validator"] = sizes["trainer"]
        if len(set(sizes.values())) != 1:
            raise ConfigError(
                f"ray.colocate.{name}: roles {roles} must have the same number of actors, got {sizes} "
                "(rollout: rollout.num_workers or cluster.rollout_workers; engine: ray.engine_replicas)"
            )
        requests = [role_request(config, role) for role in roles]
        resources: dict[str, float] = {}
        for r in requests:
            for key, value in r.resources.items():
                resources[key] = resources.get(key, 0.0) + value
        plans.append(
            GroupPlan(
                name=name,
                roles=tuple(roles),
                count=sizes[roles[0]],
                num_cpus=sum(r.num_cpus or 0.0 for r in requests),
                num_gpus=sum(r.num_gpus for r in requests),
                resources=resources,
                first_only=first_only,
            )
        )
    return plans


def trainer_bundles(config: NexRLConfig) -> int:
    """Bundles reserved for the trainer group: one per rank, and at least one per trainer node the
    operator gave (gang)."""
    return max(1, config.cluster.trainer.nodes, trainer_ranks(config))


def bundles(config: NexRLConfig, plans: list[GroupPlan]) -> list[tuple[str, int, dict[str, float]]]:
    """(group, actor index, bundle) for every GPU actor, plus the trainer's extra node bundles."""
    out: list[tuple[str, int, dict[str, float]]] = []
    for plan in plans:
        if not plan.needs_bundle:
            continue
        count = plan.count
        if "trainer" in plan.roles:
            count = max(count, trainer_bundles(config))
        out += [(plan.name, i, plan.bundle()) for i in range(count)]
    return out


def actor_options(plan: GroupPlan) -> dict[str, Any]:
    """Ray actor options of one group actor (restarts are ours, not Ray's: see supervisor)."""
    options: dict[str, Any] = {
        "num_cpus": plan.num_cpus,
        "num_gpus": plan.num_gpus,
        "max_restarts": 0,
        "max_concurrency": 8,
    }
    if plan.resources:
        options["resources"] = dict(plan.resources)
    return options


def total_request(config: NexRLConfig, plans: list[GroupPlan]) -> dict[str, float]:
    """What the job holds from Ray: the placement-group bundles plus the unbundled actors' requests,
    i.e. the figure `ray.available_resources()` drops by once everything is up."""
    parts = [b for _, _, b in bundles(config, plans)]
    parts += [p.bundle() for p in plans if not p.needs_bundle for _ in range(p.count)]
    total: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return total
