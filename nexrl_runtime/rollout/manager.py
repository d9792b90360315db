"""Rollout manager: feeds data batches to the workers in a background thread, gated by the
weight-sync mode, and puts the trajectories in the pool. Errors surface in the consumer."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from nexrl_runtime.data.loader import DataLoader, Item
from nexrl_runtime.errors import ErrorBook, InferenceFailed, RunStopped, item_name
from nexrl_runtime.pool import TrajectoryPool
from nexrl_runtime.rollout.worker import RolloutWorker
from nexrl_runtime.types import Trajectory
from nexrl_runtime.weight_sync import WeightSync


def split_by_group(items: list[Item], parts: int) -> list[list[Item]]:
    """Deal whole groups round-robin into at most `parts` chunks (a group never spans chunks)."""
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.group_id, []).append(it)
    chunks: list[list[Item]] = [[] for _ in range(max(1, min(parts, len(groups))))]
    for i, members in enumerate(groups.values()):
        chunks[i % len(chunks)].extend(members)
    return [c for c in chunks if c]


class RolloutManager:
    """Owns the workers and the producer thread; `timings` holds seconds per produced batch."""

    def __init__(
        self,
        workers: list[RolloutWorker],
        loader: DataLoader,
        pool: TrajectoryPool,
        sync: WeightSync,
        errors: ErrorBook | None = None,
    ):
        self.workers = workers
        self.loader = loader
        self.pool = pool
        self.sync = sync
        self.timings: deque[dict[str, float]] = deque()
        self.error: BaseException | None = None
        self.batches_started = 0
        self.errors = errors
        self.dropped_with_failed = 0  # samples of a group one of whose samples failed (not trained on)
        self._reroll: deque[list[Item]] = deque()
        self._items: dict[str, list[Item]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(len(workers), thread_name_prefix="rollout")
        self._thread: threading.Thread | None = None

    def run_items(self, items: list[Item], greedy: bool = False) -> tuple[list[Trajectory], dict[str, float]]:
        """Roll out items on all workers in parallel; returns trajectories and timings."""
        start = time.perf_counter()
        trajs, phases = self._run_chunks(items, greedy)
        if self.errors is not None:
            trajs = self._whole_groups(items, trajs, greedy)
        wall = time.perf_counter() - start
        return trajs, {
            "rollout_seconds": wall,
            "generate_seconds": phases.get("generate_seconds", 0.0),
            "score_seconds": phases.get("score_seconds", 0.0),
        }

    def _run_chunks(self, items: list[Item], greedy: bool) -> tuple[list[Trajectory], dict[str, float]]:
        """One parallel pass of the workers; a failed chunk is recorded (errors) and left out."""
        chunks = split_by_group(items, len(self.workers))
        futures = [
            self._executor.submit(w.rollout, c, greedy) for w, c in zip(self.workers, chunks, strict=False)
        ]
        trajs: list[Trajectory] = []
        for chunk, f in zip(chunks, futures, strict=False):
            try:
                trajs.extend(f.result())
            except Exception as err:
                if self.errors is None or isinstance(err, RunStopped):
                    raise
                kind = "inference" if isinstance(err, InferenceFailed) else "rollout"
                self.errors.record(kind, item_name(chunk[0]), err, samples=len(chunk))  # raises on stop
        # workers run in parallel: report the busiest one's phases (the critical path)
        phases = max((w.pop_timings() for w in self.workers), key=lambda t: sum(t.values()), default={})
        return trajs, phases

    REROLLS = 10
    """A group whose samples failed this many rollouts in a row stops the run (the item itself fails)."""

    def _whole_groups(self, items: list[Item], trajs: list[Trajectory], greedy: bool) -> list[Trajectory]:
        """GRPO compares a sample with its group, and the pool releases whole groups: a group that
        lost a sample to an error is rolled out again at once (new samples of the same item; its
        other samples are not trained on, counted in `dropped_with_failed`), so the batch is as
        full as without errors and every group in it is whole."""
        for attempt in range(self.REROLLS + 1):
            members: dict[str, list[Item]] = {}
            for it in items:
                members.setdefault(it.group_id, []).append(it)
            got: dict[str, int] = {}
            for t in trajs:
                got[t.group_id] = got.get(t.group_id, 0) + 1
            broken = {g for g, its in members.items() if got.get(g, 0) != len(its)}
            if not broken:
                return trajs
            if attempt == self.REROLLS:
                first = members[min(broken)][0]
                raise RunStopped(
                    f"item {item_name(first)}: a sample of its group failed in {self.REROLLS + 1} "
                    "rollouts in a row (see the errors_* counts and the logged traceback)"
                )
            kept = [t for t in trajs if t.group_id not in broken]
            self.dropped_with_failed += len(trajs) - len(kept)
            items = [it for g in sorted(broken) for it in members[g]]
            again, _ = self._run_chunks(items, greedy)
            trajs = kept + again
        return trajs

    def start(self) -> None:
        self._thread = threading.Thread(target=self._produce, name="rollout-producer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.sync.wake()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def reroll(self, group_ids: set[str]) -> None:
        """Queue the items of these groups for another rollout (over-stale trajectories)."""
        with self._lock:
            items = [it for g in group_ids for it in self._items.pop(g, [])]
            if items:
                self._reroll.append(items)

    def forget(self, group_ids: set[str]) -> None:
        with self._lock:
            for g in group_ids:
                self._items.pop(g, None)

    def snapshot(self) -> dict[str, object]:
        """What a checkpoint needs of the stream: the loader's position and the groups taken from
        it but not yet trained on (queued for re-roll, rolling out, or in the pool), as
        (epoch, position, index) ids. Consistent: the producer takes items under the same lock."""
        with self._lock:
            firsts: dict[str, Item] = {}
            for it in [it for items in self._reroll for it in items]:
                firsts.setdefault(it.group_id, it)
            for members in self._items.values():
                firsts.setdefault(members[0].group_id, members[0])
            pending = list(firsts.values())
            return {
                "loader": self.loader.state(),
                "pending_groups": [[it.epoch, it.position, it.index] for it in pending],
            }

    def restore(self, snapshot: dict, batches_started: int, batch_size: int) -> None:
        """Before `start`: continue the stream from a `snapshot`; its unfinished groups are rolled
        out again first (in batches of `batch_size` groups), then the loader goes on."""
        self.loader.load_state(snapshot["loader"])
        self.batches_started = batches_started
        groups = [self.loader.group(*ids) for ids in snapshot.get("pending_groups", [])]
        for start in range(0, len(groups), batch_size):
            self._reroll.append([it for g in groups[start : start + batch_size] for it in g])

    def _next_items(self) -> list[Item]:
        if self._reroll:
            return self._reroll.popleft()
        return self.loader.next_batch()

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.sync.wait_until(self.batches_started, timeout=None, stop=self._stop):
                    return
                with self._lock:  # taking items and registering them is one step for snapshot()
                    items = self._next_items()
                    if not items:  # the data stream is exhausted
                        self.pool.close()
                        return
                    self.batches_started += 1
                    for it in items:
                        self._items.setdefault(it.group_id, []).append(it)
                if self.pool.batch_ready == "loaded_batch_finished":
                    self.pool.mark_loaded(len(items))
                trajs, timing = self.run_items(items)
                self.timings.append(timing)
                self.pool.put_many(trajs)
        except BaseException as err:  # handed to the consumer, which re-raises it
            self.error = err
            self.pool.close()
