"""Recipe loading: Hydra composition, env interpolation, overrides and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nexrl_runtime.config import ConfigError, load_config
from nexrl_runtime.config.loader import is_schema_path, widen_overrides

RECIPE = Path(__file__).resolve().parents[2] / "recipe" / "arithmetic" / "arithmetic.yaml"

BASE = """
data: {path: data.jsonl}
rollout: {evaluator: "ev.py:E"}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_default_recipe_loads_and_sets_recipe_dir() -> None:
    cfg = load_config(RECIPE)
    assert cfg.recipe_dir == str(RECIPE.parent)
    assert cfg.data.rollout_repeat_n == 8
    assert cfg.train_batch_size == cfg.data.batch_size * cfg.data.rollout_repeat_n


def test_defaults_composition_and_overrides(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE + "total_steps: 5\ntrainer: {optim: {lr: 0.5}}\n")
    path = write(tmp_path, "job.yaml", "defaults:\n  - base\n  - _self_\ntotal_steps: 7\n")
    cfg = load_config(path, ["trainer.grpo.clip_low=0.1", "weight_sync.mode=batch-async"])
    assert cfg.total_steps == 7  # _self_ after base: the job file wins
    assert cfg.trainer.optim.lr == 0.5  # inherited from base
    assert cfg.trainer.grpo.clip_low == 0.1  # override of a key the YAML never wrote
    assert cfg.weight_sync.mode == "batch-async"


def test_env_interpolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXRL_TEST_OUT", "/tmp/somewhere")
    path = write(tmp_path, "job.yaml", BASE + "output_dir: ${oc.env:NEXRL_TEST_OUT}/x\n")
    assert load_config(path).output_dir == "/tmp/somewhere/x"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.grpo.clip_low=-1"], ["trainer.grpo.clip_low", "-1", "greater than or equal to 0"]),
        (["weight_sync.mode=eventually"], ["weight_sync.mode", "eventually", "'sync', 'batch-async'"]),
        (["data.batch_size=many"], ["data.batch_size", "many", "integer"]),
        (["++trainer.grpo.clip_lo=0.1"], ["trainer.grpo.clip_lo: unknown field (did you mean 'clip_low'?)"]),
        (["model.hidden_size=100", "model.num_heads=3"], ["model.hidden_size=100", "divisible"]),
    ],
)
def test_bad_values_name_path_value_and_allowed(overrides: list[str], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(RECIPE, overrides)
    for part in expected:
        assert part in str(err.value)


def test_unknown_override_key_fails_in_hydra() -> None:
    with pytest.raises(ConfigError, match=r"trainer\.grpo\.cliplow"):
        load_config(RECIPE, ["trainer.grpo.cliplow=0.1"])


def test_missing_required_section(tmp_path: Path) -> None:
    path = write(tmp_path, "job.yaml", "data: {path: d.jsonl}\n")
    with pytest.raises(ConfigError, match=r"rollout is required"):
        load_config(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_config("no/such/recipe.yaml")


def test_cluster_file_fills_cluster_section(tmp_path: Path) -> None:
    cluster = write(tmp_path, "cluster.yaml", "trainer: {nodes: 2, gpus_per_node: 8}\nrollout_workers: 4\n")
    cfg = load_config(RECIPE, cluster_file=cluster)
    assert (cfg.cluster.trainer.nodes, cfg.cluster.trainer.gpus_per_node, cfg.cluster.rollout_workers) == (
        2,
        8,
        4,
    )
    bad = write(tmp_path, "bad.yaml", "trainer: {gpus: 8}\n")
    with pytest.raises(ConfigError, match=r"cluster .*trainer.gpus: unknown field"):
        load_config(RECIPE, cluster_file=bad)


def test_override_widening_only_for_schema_fields() -> None:
    assert is_schema_path("trainer.grpo.clip_low")
    assert not is_schema_path("trainer.grpo.nope")
    assert widen_overrides(["a.b=1", "total_steps=3", "+x=1", "~seed"]) == [
        "a.b=1",
        "++total_steps=3",
        "+x=1",
        "~seed",
    ]


def test_device_is_checked_and_auto_resolves() -> None:
    from nexrl_runtime.models.factory import resolve_device

    assert load_config(RECIPE, ["model.device=cuda:1"]).model.device == "cuda:1"
    with pytest.raises(ConfigError, match=r"model\.device='gpu'"):
        load_config(RECIPE, ["model.device=gpu"])
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
