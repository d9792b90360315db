"""The default recipe, shortened, really learns: RL raises held-out greedy accuracy clearly above
what the warm start alone reached."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_shortened_default_recipe_learns(arithmetic) -> None:
    summary, rows = arithmetic(["total_steps=100", "validation.every=100", "logging.plot=false"])
    before = summary.val_after_warm_start["val_accuracy"]
    after = summary.val_final["val_accuracy"]
    print(f"held-out accuracy: warm start {before:.3f} -> after 100 RL steps {after:.3f}")
    assert before <= 0.5  # the warm start alone stays far below the 0.9 target
    assert after >= before + 0.3
    first, last = rows[:20], rows[-20:]
    mean = lambda rs: sum(r["reward_mean"] for r in rs) / len(rs)  # noqa: E731
    assert mean(last) > mean(first) + 0.1  # the training reward rises too
    assert summary.stats["weight_pushes"] == 100
