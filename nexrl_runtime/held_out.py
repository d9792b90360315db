"""Held-out evaluation (the `validation` config section): greedy rollouts over held-out items ->
accuracy and mean reward."""

from __future__ import annotations

from nexrl_runtime.data.loader import Item
from nexrl_runtime.rollout.worker import RolloutWorker
from nexrl_runtime.types import Trajectory


def held_out_items(rows: list[dict], prompt_key: str) -> list[Item]:
    """One Item per held-out row (no repeats: greedy decoding is deterministic)."""
    return [
        Item(
            data=row,
            prompt=row[prompt_key],
            group_id=f"val-{i}",
            sample_index=0,
            epoch=0,
            position=i,
            index=i,
        )
        for i, row in enumerate(rows)
    ]


def summarize(trajs: list[Trajectory]) -> dict[str, float]:
    """Accuracy (from the evaluator's `correct`, where it reports one) and mean reward."""
    out = {"val_reward": sum(t.reward for t in trajs) / max(len(trajs), 1)}
    judged = [t.extra["correct"] for t in trajs if t.extra.get("correct") is not None]
    if judged:
        out["val_accuracy"] = sum(map(bool, judged)) / len(judged)
    return out


def evaluate_held_out(worker: RolloutWorker, items: list[Item], greedy: bool = True) -> dict[str, float]:
    """Roll out `items` on `worker` (greedy unless told otherwise) and summarize them."""
    return summarize(worker.rollout(items, greedy=greedy))
