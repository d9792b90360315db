"""Staleness accounting and the rollout gate of each sync mode (pure rules + the WeightSync object)."""

from __future__ import annotations

import threading

import pytest

from nexrl_runtime.config.schema import WeightSyncConfig
from nexrl_runtime.weight_sync import WeightSync, is_stale, may_start_batch, version_lag


class RecordingEngine:
    def __init__(self) -> None:
        self.loads: list[int] = []

    def load_weights(self, state_dict, version: int) -> None:
        self.loads.append(version)


def test_lag_and_staleness() -> None:
    assert version_lag(5, 3) == 2
    assert not is_stale(5, 5, 0)
    assert is_stale(5, 4, 0)
    assert not is_stale(5, 3, 2)
    assert is_stale(5, 2, 2)


@pytest.mark.parametrize(
    ("mode", "bound", "batch", "steps", "ok"),
    [
        ("sync", 0, 0, 0, True),
        ("sync", 0, 1, 0, False),
        ("sync", 0, 3, 3, True),
        ("batch-async", 1, 1, 0, True),
        ("batch-async", 1, 2, 0, False),
        ("batch-async", 2, 2, 0, True),
        ("fully-async", 1, 2, 0, True),
        ("fully-async", 1, 3, 0, False),  # memory cap: bound + 1 batches ahead
    ],
)
def test_gate(mode: str, bound: int, batch: int, steps: int, ok: bool) -> None:
    assert may_start_batch(batch, steps, mode, bound) is ok


def test_push_versions_every_engine_and_sync_bound_is_zero() -> None:
    engines = [RecordingEngine(), RecordingEngine()]
    ws = WeightSync(WeightSyncConfig(mode="sync", staleness=3), engines)
    assert ws.bound == 0
    ws.push({})
    ws.push({})
    assert ws.version == 2 and all(e.loads == [1, 2] for e in engines)
    assert ws.is_stale(1) and not ws.is_stale(2)


def test_counts_by_policy() -> None:
    drop = WeightSync(WeightSyncConfig(mode="batch-async", staleness=1, on_stale="drop"), [])
    drop.record_stale(3)
    reroll = WeightSync(WeightSyncConfig(mode="batch-async", staleness=1, on_stale="reroll"), [])
    reroll.record_stale(2)
    assert (drop.dropped_stale, drop.rerolled_stale) == (3, 0)
    assert (reroll.dropped_stale, reroll.rerolled_stale) == (0, 2)


def test_wait_until_opens_on_step_done_and_stops() -> None:
    ws = WeightSync(WeightSyncConfig(mode="sync"), [])
    assert not ws.wait_until(1, timeout=0.05)
    opened = threading.Event()

    def waiter() -> None:
        if ws.wait_until(1, timeout=10):
            opened.set()

    t = threading.Thread(target=waiter)
    t.start()
    ws.step_done(1)
    t.join(10)
    assert opened.is_set()
    stop = threading.Event()
    stop.set()
    assert not ws.wait_until(5, timeout=10, stop=stop)
