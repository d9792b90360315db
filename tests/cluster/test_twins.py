"""Each CPU twin in examples/cpu/ is its example with other sizes and model only (issue 12 item 4)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
TWINS = {
    "nexrljob-arithmetic-cpu.yaml": "nexrljob-arithmetic-cpu.yaml",
    "nexrljob-gsm8k-cpu.yaml": "nexrljob-qwen2.5-1.5b-gsm8k.yaml",
    "nexrljob-gsm8k-agent-cpu.yaml": "nexrljob-qwen2.5-1.5b-gsm8k-agent.yaml",
    "nexrljob-training-service-cpu.yaml": "nexrljob-qwen2.5-1.5b-training-service.yaml",
}
SIZES = (
    "total_steps",
    "batch_size",
    "rollout_repeat_n",
    "max_sequence_length",
    "max_new_tokens",
    "mini_batch_size",
    "micro_batch_size",
    "limit",
    "resources",
    "size",
    "gpusPerReplica",
    "gpusPerNode",
    "--max-model-len",
    "--gpu-memory-utilization",
    "status_every_s",
)  # a 4-step twin reports every step, or kubectl sees only its last
MODEL = ("model", "name", "metadata", "args")  # the model, and names that follow it


def leaves(obj: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Flatten a manifest; Hydra overrides `a.b=v` become leaves under `overrides` by their key."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in leaves(value, (*path, str(key))).items()}
    if isinstance(obj, list) and path[-1:] == ("overrides",):
        return {(*path, *item.split("=", 1)[0].split(".")): item.split("=", 1)[1] for item in obj}
    return {path: obj}


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_twin_differs_only_in_sizes_and_model(twin: str) -> None:
    original = leaves(yaml.safe_load((EXAMPLES / TWINS[twin]).read_text()))
    copy = leaves(yaml.safe_load((EXAMPLES / "cpu" / twin).read_text()))
    changed = {path for path in original.keys() | copy.keys() if original.get(path) != copy.get(path)}
    other = sorted(p for p in changed if not any(part in SIZES or part in MODEL for part in p))
    assert not other, f"{twin} differs from {TWINS[twin]} in more than sizes and model: {other}"
    kept = [p for p in original if p[-1] in ("mode", "engine", "replicas", "workers", "nodes", "queueName")]
    kinds = ("size", "existingClaim")  # a new claim or an existing one, as in the example
    assert [("spec", "storage", k) in copy for k in kinds] == [
        ("spec", "storage", k) in original for k in kinds
    ]
    assert all(copy.get(p) == original[p] for p in kept)
