"""TrajectoryPool: collects rolled-out trajectories from many producers and hands out train Batches.

Grouping (what a unit of release is):
  * "none": every trajectory is its own unit; batches follow arrival order.
  * "key": an inner group is the trajectories sharing the values of `group_keys`; it is complete
    with `group_size` members and is then sealed (a later member with that key starts a new group).
    Groups are released whole, never split across batches.
  * "hierarchical": as "key" with the full key tuple as the inner group; the outer group is the key
    without its last element (["run_id", "group_id"] -> outer = run_id).

Batch composition (rule of `compose`): waiting inner groups are kept in completion order; outer
groups are ranked by their oldest waiting inner group. A batch takes (1) the oldest outer group, whole
if it fits in the room left, else as many of its inner groups as fit (always at least one inner group,
so a group larger than the batch goes out alone); (2) every further outer group, by rank, that fits
whole; (3) to fill the room left, inner groups of the outer groups skipped in (2), by rank. In the
batch, the members of an outer group are contiguous. So an outer group is split only when it does not
fit whole in the room left, and the oldest one is never starved. For "key"/"none" each outer group is
one inner group, which makes the rule "oldest group first, then later groups that fit".

Batch-ready rules:
  * "batch_size_reached": a batch is formed when complete groups hold >= batch_size trajectories; it
    holds at most batch_size (exactly batch_size when groups tile it, e.g. group_size divides it),
    except a single inner group larger than batch_size; groups that do not fit wait for the next one.
  * "loaded_batch_finished": `mark_loaded(n)` opens a loaded batch expecting n trajectories. A new
    inner group is attributed to the oldest unfinished loaded batch that has room (its members follow
    it); trajectories of groups arriving when none has room wait for the next `mark_loaded`. A loaded
    batch is finished when its arrived trajectories reach its expected count; it is then released
    whole (batch_size is not used), short groups included: nothing more will come. One expecting 0
    trajectories comes out as an empty Batch, so no caller waits forever.

After `close()` the pool refuses trajectories (counted as `dropped`); batches already formed still
come out.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, get_args

from nexrl_runtime.types import Batch, Trajectory

if TYPE_CHECKING:
    from nexrl_runtime.config.schema import NexRLConfig

Key = tuple[Hashable, ...]
Group = list[Trajectory]
Grouping = Literal["none", "key", "hierarchical"]
BatchReady = Literal["batch_size_reached", "loaded_batch_finished"]
_ATTRS = frozenset(f.name for f in fields(Trajectory)) - {"extra"}


def compose(groups: Sequence[tuple[Key, Group]], outer: Callable[[Key], Key], limit: int) -> list[int]:
    """Indices into `groups` (completion order) of the next batch, by the rule in the module doc."""
    buckets: dict[Key, list[int]] = {}
    for i, (key, _) in enumerate(groups):
        buckets.setdefault(outer(key), []).append(i)
    ranked = list(buckets.values())
    chosen: set[int] = set()
    room = limit

    def fill(indices: list[int]) -> None:
        nonlocal room
        for i in indices:
            size = len(groups[i][1])
            if i not in chosen and (size <= room or not chosen):
                chosen.add(i)
                room -= size

    if ranked:
        fill(ranked[0])
    for indices in ranked[1:]:
        if sum(len(groups[i][1]) for i in indices) <= room:
            fill(indices)
    for indices in ranked[1:]:
        fill(indices)
    return [i for indices in ranked for i in indices if i in chosen]


@dataclass
class _Loaded:
    """A loaded data batch: how many trajectories it still expects and the groups attributed to it."""

    expected: int
    groups: dict[Key, Group] = field(default_factory=dict)
    arrived: int = 0

    @property
    def finished(self) -> bool:
        return self.arrived >= self.expected


class TrajectoryPool:
    """Thread-safe buffer of trajectories released as Batches of whole groups (see module doc)."""

    def __init__(
        self,
        batch_size: int,
        grouping: Grouping = "key",
        group_keys: Sequence[str] = ("group_id",),
        batch_ready: BatchReady = "batch_size_reached",
        group_size: int = 1,
    ) -> None:
        if batch_size < 1 or group_size < 1:
            raise ValueError(f"batch_size ({batch_size}) and group_size ({group_size}) must be >= 1")
        for name, value, allowed in (
            ("grouping", grouping, Grouping),
            ("batch_ready", batch_ready, BatchReady),
        ):
            if value not in get_args(allowed):
                raise ValueError(f"pool {name} must be one of {get_args(allowed)}, got {value!r}")
        min_keys = {"none": 0, "key": 1, "hierarchical": 2}[grouping]
        if len(group_keys) < min_keys:
            raise ValueError(f"grouping {grouping!r} needs >= {min_keys} group_keys, got {list(group_keys)}")
        self.batch_size, self.grouping, self.group_keys = batch_size, grouping, tuple(group_keys)
        self.batch_ready, self.group_size = batch_ready, group_size
        self._unit = 1 if grouping == "none" else group_size
        self._cond = threading.Condition()
        self._open: dict[Key, Group] = {}  # incomplete groups, or (loaded mode) groups not yet attributed
        self._ready: list[tuple[Key, Group]] = []  # complete groups in completion order (batch_size mode)
        self._loaded: list[_Loaded] = []
        self._closed = False
        self._seq = 0
        self._counts = {"received": 0, "released": 0, "dropped": 0, "batches": 0}

    @classmethod
    def from_config(cls, config: NexRLConfig) -> TrajectoryPool:
        """The pool a recipe describes; group_size is data.rollout_repeat_n."""
        p, n = config.pool, config.data.rollout_repeat_n
        return cls(config.train_batch_size, p.grouping, p.group_keys, p.batch_ready, n)

    # --- producers -------------------------------------------------------------------------------

    def put_many(self, trajs: Iterable[Trajectory]) -> int:
        """Add trajectories under one lock; returns how many were accepted (none once closed)."""
        accepted = 0
        with self._cond:
            try:
                for traj in trajs:
                    key = self._key(traj)
                    if self._closed:
                        self._counts["dropped"] += 1
                        continue
                    self._place(key, traj)
                    accepted += 1
            finally:  # a bad key stops the call, but what was placed before it counts and is seen
                self._counts["received"] += accepted
                self._notify_if_ready()
        return accepted

    def mark_loaded(self, expected_count: int) -> None:
        """Open a loaded batch of `expected_count` trajectories (loaded_batch_finished only)."""
        if self.batch_ready != "loaded_batch_finished":
            raise RuntimeError("mark_loaded is only for batch_ready='loaded_batch_finished'")
        if expected_count < 0:
            raise ValueError(f"expected_count must be >= 0, got {expected_count}")
        with self._cond:
            self._loaded.append(_Loaded(expected_count))
            waiting, self._open = self._open, {}
            for key, group in waiting.items():
                for traj in group:
                    self._place(key, traj)
            self._notify_if_ready()

    def close(self) -> None:
        """Refuse further trajectories and wake all waiters (batches already formed still come out)."""
        with self._cond:
            self._closed = True
            self._notify()

    # --- consumers -------------------------------------------------------------------------------

    def get_batch(self, timeout: float | None = None) -> Batch | None:
        """The next batch, waiting up to `timeout` seconds; None on timeout or once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._has_batch(), timeout)
            return self._pop()

    # --- introspection ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Sizes and counters: held, open (incomplete/unattributed) groups, ready, loaded, totals."""
        with self._cond:
            return {
                "held": sum(len(g) for _, g in self._held()),
                "open_groups": len(self._open),
                "open_trajectories": sum(len(g) for g in self._open.values()),
                "ready_trajectories": sum(len(g) for _, g in self._ready),
                "loaded_batches": [(ld.arrived, ld.expected) for ld in self._loaded],
                "closed": self._closed,
                **self._counts,
            }

    # --- internals (all called with the lock held) -----------------------------------------------

    def _key(self, traj: Trajectory) -> Key:
        if self.grouping == "none":
            self._seq += 1
            return ("#", self._seq)
        values = []
        for name in self.group_keys:
            if name in _ATTRS:
                values.append(getattr(traj, name))
            elif name in traj.extra:
                values.append(traj.extra[name])
            else:
                raise ValueError(
                    f"pool group key {name!r} is neither a Trajectory attribute nor in traj.extra "
                    f"(extra keys: {sorted(traj.extra)})"
                )
        key = tuple(values)
        try:
            hash(key)
        except TypeError as e:
            raise ValueError(f"pool group keys {list(self.group_keys)} need hashable values: {e}") from e
        return key

    def _outer(self, key: Key) -> Key:
        return key[:-1] if self.grouping == "hierarchical" else key

    def _place(self, key: Key, traj: Trajectory) -> None:
        if self.batch_ready == "batch_size_reached":
            group = self._open.setdefault(key, [])
            group.append(traj)
            if len(group) >= self._unit:
                self._ready.append((key, self._open.pop(key)))
            return
        target = next((ld for ld in self._loaded if key in ld.groups), None) or next(
            (ld for ld in self._loaded if not ld.finished and self._reserved(ld) < ld.expected), None
        )
        if target is None:
            self._open.setdefault(key, []).append(traj)
        else:
            target.groups.setdefault(key, []).append(traj)
            target.arrived += 1

    def _reserved(self, ld: _Loaded) -> int:
        return sum(max(len(g), self._unit) for g in ld.groups.values())

    def _held(self) -> Iterable[tuple[Key, Group]]:
        yield from self._open.items()
        yield from self._ready
        for ld in self._loaded:
            yield from ld.groups.items()

    def _has_batch(self) -> bool:
        if self.batch_ready == "batch_size_reached":
            return sum(len(g) for _, g in self._ready) >= self.batch_size
        return any(ld.finished for ld in self._loaded)

    def _pop(self) -> Batch | None:
        if not self._has_batch():
            return None
        if self.batch_ready == "batch_size_reached":
            chosen = compose(self._ready, self._outer, self.batch_size)
            groups = [self._ready[i] for i in chosen]
            taken = set(chosen)
            self._ready = [kg for i, kg in enumerate(self._ready) if i not in taken]
        else:
            done = next(ld for ld in self._loaded if ld.finished)
            self._loaded.remove(done)
            items = list(done.groups.items())
            groups = [items[i] for i in compose(items, self._outer, sys.maxsize)]
        trajs = [t for _, g in groups for t in g]
        self._counts["released"] += len(trajs)
        self._counts["batches"] += 1
        return Batch(trajs, metadata={"pool_batch": self._counts["batches"] - 1, "num_groups": len(groups)})

    def _notify_if_ready(self) -> None:
        if self._has_batch():
            self._notify()

    def _notify(self) -> None:
        self._cond.notify_all()
