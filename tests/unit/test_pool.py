"""TrajectoryPool: grouping, batch-ready rules, blocking waits, closing and thread safety."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.pool import TrajectoryPool, compose
from nexrl_runtime.types import Batch, Trajectory


def traj(label: str, version: int = 0, **extra: Any) -> Trajectory:
    """A trajectory labelled "group" or "run/group" (run_id defaults to "r")."""
    run, _, gid = label.rpartition("/")
    return Trajectory([1], [1], [0.0], 0.0, gid, run or "r", version, extra=extra)


def labels(batch: Batch | None) -> list[str]:
    assert batch is not None
    return [t.group_id if t.run_id == "r" else f"{t.run_id}/{t.group_id}" for t in batch.trajectories]


def ready(pool: TrajectoryPool) -> Batch | None:
    """The next batch if one is ready now, else None."""
    return pool.get_batch(timeout=0)


def held(pool: TrajectoryPool) -> int:
    return pool.stats()["held"]


def feed(pool: TrajectoryPool, arrivals: str) -> list[list[str]]:
    """Put each space-separated label, popping batches after every put like an eager consumer."""
    out = []
    for label in arrivals.split():
        pool.put_many([traj(label)])
        while (batch := ready(pool)) is not None:
            out.append(labels(batch))
    return out


# --- composition rule ------------------------------------------------------------------------


def groups_of(spec: str) -> list[tuple[tuple[str, ...], list[Trajectory]]]:
    """Parse "A/1:2 B/1:1": groups keyed (outer, inner) with 2 and 1 members."""
    out = []
    for item in spec.split():
        name, size = item.split(":")
        out.append((tuple(name.split("/")), [traj(name)] * int(size)))
    return out


@pytest.mark.parametrize(
    ("spec", "limit", "chosen"),
    [
        ("a:2 b:2 c:2", 4, "a b"),  # tiles: exactly the limit
        ("a:2 b:3 c:2", 4, "a c"),  # a later group that fits goes before one that does not
        ("a:5 b:1", 4, "a"),  # the oldest goes even when larger than the batch
        ("A/1:1 B/1:1 A/2:1 B/2:1", 4, "A/1 A/2 B/1 B/2"),  # outer groups contiguous
        ("A/1:1 B/1:1 B/2:1 B/3:1 C/1:1 C/2:1", 4, "A/1 B/1 B/2 B/3"),  # whole outer B fits
        ("A/1:1 B/1:1 B/2:1 B/3:1 B/4:1 C/1:1 C/2:1", 4, "A/1 B/1 C/1 C/2"),  # B split only to fill
        ("A/1:2 A/2:2 A/3:2 B/1:2", 4, "A/1 A/2"),  # oldest outer too big: split, never starved
        ("A/1:1 B/1:1 A/2:1", 10**9, "A/1 A/2 B/1"),  # unlimited (a loaded batch): all, regrouped
        ("", 4, ""),
    ],
)
def test_compose_rule(spec: str, limit: int, chosen: str) -> None:
    groups = groups_of(spec)
    picked = compose(groups, lambda k: k[:-1] if len(k) > 1 else k, limit)
    assert ["/".join(groups[i][0]) for i in picked] == chosen.split()


# --- batch_size_reached ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grouping", "batch_size", "group_size", "arrivals", "batches", "still_held"),
    [
        ("none", 3, 4, "a b a c b c d", [["a", "b", "a"], ["c", "b", "c"]], 1),
        ("key", 4, 2, "a b a c b c", [["a", "a", "b", "b"]], 2),
        ("key", 4, 2, "a b c d a", [], 5),  # only a is complete: 2 < 4
        ("key", 5, 2, "a a b b c c", [["a", "a", "b", "b"]], 2),  # groups do not tile: 4 out, c waits
        ("key", 2, 3, "a a a", [["a", "a", "a"]], 0),  # a group larger than the batch goes alone
        ("key", 4, 2, "a a a b b a", [["a", "a", "b", "b"]], 2),  # a sealed at 2; a 2nd a-group
        ("hierarchical", 4, 1, "A/1 B/1 A/2 B/2", [["A/1", "A/2", "B/1", "B/2"]], 0),
    ],
)
def test_batch_size_reached(
    grouping: Any, batch_size: int, group_size: int, arrivals: str, batches: list[list[str]], still_held: int
) -> None:
    keys = ["run_id", "group_id"] if grouping == "hierarchical" else ["group_id"]
    pool = TrajectoryPool(batch_size, grouping, keys, "batch_size_reached", group_size)
    assert feed(pool, arrivals) == batches
    assert held(pool) == still_held


def test_group_keys_from_extra_and_errors() -> None:
    pool = TrajectoryPool(2, "key", ["prompt_id"], group_size=2)
    pool.put_many([traj("x", prompt_id=7), traj("y", prompt_id=7)])
    assert labels(ready(pool)) == ["x", "y"]
    with pytest.raises(ValueError, match=r"group key 'prompt_id' is neither .* \(extra keys: \['z'\]\)"):
        pool.put_many([traj("x", z=1)])
    with pytest.raises(ValueError, match="need hashable values"):
        pool.put_many([traj("x", prompt_id=[1])])
    with pytest.raises(ValueError, match="prompt_id"):  # what came before the bad one stays
        pool.put_many([traj("x", prompt_id=1), traj("y")])
    assert held(pool) == 1 and pool.stats()["received"] == 3


def test_from_config() -> None:
    cfg = NexRLConfig(
        data={"path": "d.jsonl", "batch_size": 3, "rollout_repeat_n": 4},
        rollout={"evaluator": "evaluator.py:E"},
        pool={"grouping": "hierarchical", "group_keys": ["run_id", "group_id"]},
    )
    pool = TrajectoryPool.from_config(cfg)
    assert (pool.batch_size, pool.group_size, pool.grouping) == (12, 4, "hierarchical")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "must be >= 1"),
        ({"group_size": 0}, "must be >= 1"),
        ({"grouping": "bucket"}, "grouping must be one of"),
        ({"batch_ready": "soon"}, "batch_ready must be one of"),
        ({"grouping": "hierarchical"}, r"needs >= 2 group_keys, got \['group_id'\]"),
        ({"grouping": "key", "group_keys": []}, "needs >= 1 group_keys"),
    ],
)
def test_constructor_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrajectoryPool(**{"batch_size": 4, **kwargs})


# --- loaded_batch_finished -------------------------------------------------------------------


def loaded(grouping: Any = "key", group_size: int = 2) -> TrajectoryPool:
    return TrajectoryPool(1, grouping, ["group_id"], "loaded_batch_finished", group_size)


@pytest.mark.parametrize(
    ("steps", "batches"),
    [
        ("load:4 a a b b", [["a", "a", "b", "b"]]),  # batch_size (1) is not used
        ("a a b b load:4", [["a", "a", "b", "b"]]),  # early arrivals wait for mark_loaded
        ("load:4 load:4 a b a c b d c d", [["a", "a", "b", "b"], ["c", "c", "d", "d"]]),
        ("load:2 a a b b", [["a", "a"]]),  # b has no loaded batch yet: held
        ("load:2 a a b b load:2", [["a", "a"], ["b", "b"]]),
        ("load:3 a a b", [["a", "a", "b"]]),  # a short group once nothing more comes
        ("load:0", [[]]),  # nothing expected: an empty batch, not a hang
    ],
)
def test_loaded_batch_finished(steps: str, batches: list[list[str]]) -> None:
    pool, out = loaded(), []
    for step in steps.split():
        verb, _, arg = step.partition(":")
        if verb == "load":
            pool.mark_loaded(int(arg))
        else:
            pool.put_many([traj(verb)])
        while (batch := ready(pool)) is not None:
            out.append(labels(batch))
    assert out == batches


def test_loaded_none_grouping_and_misuse() -> None:
    pool = loaded("none", group_size=3)
    pool.mark_loaded(3)
    pool.put_many([traj("a"), traj("b"), traj("a")])  # "none": every trajectory is its own group
    assert labels(ready(pool)) == ["a", "b", "a"]
    with pytest.raises(ValueError, match="expected_count must be >= 0"):
        pool.mark_loaded(-1)
    with pytest.raises(RuntimeError, match="only for batch_ready='loaded_batch_finished'"):
        TrajectoryPool(4).mark_loaded(4)


# --- waiting ---------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_get_batch_waits_for_a_producer_and_close_wakes_waiters() -> None:
    pool = TrajectoryPool(2, group_size=2)
    assert pool.get_batch(timeout=0.01) is None
    producer = threading.Thread(target=pool.put_many, args=([traj("a"), traj("a")],))
    producer.start()
    assert labels(pool.get_batch(timeout=5)) == ["a", "a"]
    producer.join(5)
    results: list[Batch | None] = []
    waiter = threading.Thread(target=lambda: results.append(pool.get_batch()))
    waiter.start()
    pool.close()
    waiter.join(5)
    assert not waiter.is_alive() and results == [None]
    assert pool.put_many([traj("b")]) == 0 and pool.stats()["closed"] and pool.stats()["dropped"] == 1


# --- invariants under concurrency and random arrival orders -----------------------------------


def check_batches(batches: list[Batch], group_size: int, hierarchical: bool) -> None:
    for batch in batches:
        counts = Counter((t.run_id, t.group_id) for t in batch.trajectories)
        assert set(counts.values()) == {group_size}, "a group was split"
        if hierarchical:  # outer groups contiguous
            runs = [t.run_id for t in batch.trajectories]
            assert sum(i == 0 or runs[i - 1] != r for i, r in enumerate(runs)) == len(set(runs))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("grouping", "batch_ready"),
    [("key", "batch_size_reached"), ("hierarchical", "batch_size_reached"), ("key", "loaded_batch_finished")],
)
def test_threads_lose_nothing_and_never_split(grouping: Any, batch_ready: Any) -> None:
    producers, groups, per_load = 4, 300, 6  # member p of every group comes from producer p
    pool = TrajectoryPool(8, grouping, ["run_id", "group_id"], batch_ready, group_size=producers)
    if batch_ready == "loaded_batch_finished":
        for _ in range(groups // per_load):
            pool.mark_loaded(per_load * producers)

    def produce(p: int) -> None:
        order = list(range(groups))
        random.Random(p).shuffle(order)
        for g in order:
            pool.put_many([traj(f"run{g % 5}/g{g}", uid=(g, p))])

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    batches: list[Batch] = []
    while sum(map(len, batches)) < groups * producers and (b := pool.get_batch(timeout=5)) is not None:
        batches.append(b)
    for t in threads:
        t.join(5)
    uids = [t.extra["uid"] for b in batches for t in b.trajectories]
    assert sorted(uids) == sorted((g, p) for g in range(groups) for p in range(producers))
    expected = 8 if batch_ready == "batch_size_reached" else per_load * producers
    assert {len(b) for b in batches} == {expected}
    check_batches(batches, producers, grouping == "hierarchical")


@given(
    st.sampled_from(["key", "hierarchical"]),
    st.integers(1, 3),
    st.integers(1, 3),
    st.lists(st.integers(0, 4), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
)
def test_random_arrivals_keep_invariants(
    grouping: Any, group_size: int, groups_per_batch: int, runs: list[int], rnd: random.Random
) -> None:
    keys = ["run_id", "group_id"]
    pool = TrajectoryPool(group_size * groups_per_batch, grouping, keys, group_size=group_size)
    arrivals = [(f"R{run}/g{g}", k) for g, run in enumerate(runs) for k in range(group_size)]
    rnd.shuffle(arrivals)
    batches = []
    for label, k in arrivals:
        pool.put_many([traj(label, uid=(label, k))])
        while (b := ready(pool)) is not None:
            batches.append(b)
    assert all(len(b) == pool.batch_size for b in batches)
    check_batches(batches, group_size, grouping == "hierarchical")
    released = [t.extra["uid"] for b in batches for t in b.trajectories]
    assert len(released) == len(set(released)) and len(released) + held(pool) == len(arrivals)
    assert held(pool) < pool.batch_size
