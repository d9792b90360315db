"""Each sync mode pushes weights every step, and what is trained on obeys the staleness bound."""

from __future__ import annotations

import pytest

SMALL = [
    "total_steps=8",
    "warm_start.steps=0",
    "validation.path=null",
    "model.hidden_size=32",
    "model.num_layers=1",
    "data.batch_size=4",
    "data.rollout_repeat_n=4",
    "logging.plot=false",
]


@pytest.mark.parametrize(
    ("mode", "staleness", "on_stale"),
    [
        ("sync", 0, "drop"),
        ("batch-async", 1, "drop"),
        ("batch-async", 2, "reroll"),
        ("fully-async", 1, "drop"),
    ],
)
def test_mode_pushes_and_bounds_staleness(arithmetic, mode: str, staleness: int, on_stale: str) -> None:
    summary, rows = arithmetic(
        [
            *SMALL,
            f"weight_sync.mode={mode}",
            f"weight_sync.staleness={staleness}",
            f"weight_sync.on_stale={on_stale}",
        ]
    )
    bound = 0 if mode == "sync" else staleness
    assert summary.steps == 8 and len(rows) == 8
    # one push per step, and the engine's version follows: weights really moved every step
    assert [r["weight_pushes"] for r in rows] == list(range(1, 9))
    assert [r["policy_version"] for r in rows] == list(range(1, 9))
    assert all(r["version_lag_max"] <= bound for r in rows)
    if mode == "sync":
        assert all(r["version_lag_max"] == 0 for r in rows)
    else:  # rollouts ran ahead of training: some trained data is genuinely older than the weights
        assert any(r["version_lag_max"] > 0 for r in rows)
    if on_stale == "drop":
        assert summary.stats["rerolled_stale"] == 0
    else:
        assert summary.stats["dropped_stale"] == 0
