"""An inline recipe (spec.config) is checked at admission with the runtime's own schema and words,
as the runtime will load it: the operator's overrides and spec.overrides applied, its cluster section
in; what only Hydra can compose or resolve is left to the runtime."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from nexrl_operator.api import NexRLJobSpec
from nexrl_operator.spec_checks import JobValidationError, parse_job, validate_job

from nexrl_runtime.config.schema import NexRLConfig

REPO = Path(__file__).resolve().parents[2]
RECIPE = {
    "total_steps": 5,
    "data": {"path": "/app/recipe/arithmetic/data/train.jsonl"},
    "rollout": {"evaluator": "/app/recipe/arithmetic/evaluator.py:ArithmeticEvaluator"},
}


def errors(config: dict[str, Any] | None = None, overrides: list[str] | None = None, **spec: Any
           ) -> list[str]:
    body = {"config": RECIPE if config is None else config, "overrides": overrides or [], "image": "img",
            "inference": {"replicas": 0}, "trainer": {"nodes": 0, "gpusPerNode": 0}, **spec}
    return [str(e) for e in validate_job(NexRLJobSpec.model_validate(body))]


def with_(**fields: Any) -> dict[str, Any]:
    config = copy.deepcopy(RECIPE)
    config.update(fields)
    return config


def test_a_valid_recipe_passes():
    assert errors() == []


def test_the_issue_unknown_key_is_refused_before_any_gpu():
    job = {"metadata": {"name": "bogus"},
           "spec": {"image": "img", "config": with_(trainer={"bogus": 1}), "inference": {"replicas": 0},
                    "trainer": {"nodes": 0, "gpusPerNode": 0}}}
    with pytest.raises(JobValidationError) as info:
        parse_job(job)
    assert [str(e) for e in info.value.errors] == ["spec.config.trainer.bogus: unknown field"]


@pytest.mark.parametrize(
    ("config", "text"),
    [
        (with_(trainer={"grpo": {"clip_lo": 0.1}}),
         "spec.config.trainer.grpo.clip_lo: unknown field (did you mean 'clip_low'?)"),
        ({"data": {"path": "d.jsonl"}}, "spec.config.rollout is required"),
        (with_(total_steps=0), "spec.config.total_steps: must be greater than or equal to 1 (got 0)"),
        (with_(weight_sync={"mode": "eventually"}),
         "spec.config.weight_sync.mode: must be one of 'sync', 'batch-async', 'fully-async' "
         "(got 'eventually')"),
        (with_(data={"path": "d", "batch_size": "many"}),
         "spec.config.data.batch_size: must be an integer (got 'many')"),
        (with_(model={"hidden_size": 100, "num_heads": 3}),
         "spec.config.model: model.hidden_size=100 must be divisible by model.num_heads=3"),
        (with_(model={"kind": "hf"}),
         "spec.config.model: model.path is required when model.kind is 'hf' (a local model folder)"),
    ],
)
def test_schema_problems_in_the_runtimes_words(config: dict[str, Any], text: str):
    assert errors(config) == [text]


def test_the_runtime_words_them_the_same():
    from nexrl_runtime.config.errors import problem_lines

    with pytest.raises(Exception) as info:
        NexRLConfig.model_validate(with_(trainer={"bogus": 1}))
    assert problem_lines(info.value, NexRLConfig) == ["trainer.bogus: unknown field"]


def test_overrides_apply_first_and_are_named():
    assert errors(overrides=["total_steps=7", "trainer.optim.lr=1e-4", "+warm_start.steps=3",
                             "++seed=2", "~total_steps"]) == []
    assert errors(overrides=["total_steps=0"]) == [
        "spec.overrides[0]: total_steps: must be greater than or equal to 1 (got 0)"]
    assert errors(overrides=["seed=1", "++trainer.grpo.clip_lo=0.1"]) == [
        "spec.overrides[1]: trainer.grpo.clip_lo: unknown field (did you mean 'clip_low'?)"]
    assert errors(with_(total_steps=0), overrides=["total_steps=3"]) == []  # fixed by an override
    assert errors(overrides=["~rollout"]) == ["spec.overrides[0]: rollout is required"]


def test_override_values_read_as_hydra_reads_them():
    simple = ["run_name='quoted'", "trainer.optim.lr=1e-4", "seed=-3", "pool.batch_size=8"]
    assert errors(overrides=simple) == []
    assert errors(overrides=["run_name=true"]) == ["spec.overrides[0]: run_name: must be a string (got True)"]
    assert errors(overrides=["run_name=yes", "trainer.grpo.clip_low=1e-1"]) == []  # 'yes' stays a string
    assert errors(overrides=["logging.plot=false", "validation.path=null"]) == []
    assert errors(overrides=["validation.every=null"]) == [
        "spec.overrides[0]: validation.every: must be an integer (got None)"]


def test_hydra_composition_errors_that_need_no_hydra():
    assert errors(overrides=["+total_steps=3"]) == [
        "spec.overrides[0]: total_steps is in spec.config already: write 'total_steps=3' (set) or "
        "'++total_steps=3' (add or set)"]
    assert errors(overrides=["~seed"]) == ["spec.overrides[0]: seed is not in spec.config: nothing to delete"]
    assert errors(overrides=["~ray.address"]) == [
        "spec.overrides[0]: ray.address is not in spec.config: nothing to delete"]


def test_only_hydra_can_tell_so_the_runtime_checks():
    # an interpolated value resolves only in the runtime (and may become a number)
    assert errors(with_(total_steps="${oc.env:STEPS,5}", output_dir="${oc.env:OUT,runs}/x")) == []
    assert errors(with_(data="${oc.env:DATA}")) == []
    # a defaults list composes other files
    assert errors({"defaults": ["base", "_self_"], "total_steps": 3}) == []
    assert errors(with_(defaults=["_self_"], trainer={"bogus": 1})) == [
        "spec.config.trainer.bogus: unknown field"]
    # values only Hydra reads: lists, sweeps, functions, interpolations
    assert errors(overrides=["total_steps=${oc.env:N}", "trainer.optim.betas=[0.9,0.95]",
                             "seed=choice(1,2)"]) == []
    # ... but a key no schema has is unknown whatever its value
    assert errors(overrides=["++trainer.bogus=[1,2]"]) == ["spec.overrides[0]: trainer.bogus: unknown field"]


def test_what_the_operator_writes_is_part_of_the_check():
    # the operator's ++model.kind=hf ++model.path=<spec.model.path> satisfy the hf model rule
    hf = with_(model={"kind": "hf"})
    assert errors(hf, model={"name": "m", "path": "/data/m"}) == []
    assert errors(hf, model={"name": "m"}) == [
        "spec.config.model: model.path is required when model.kind is 'hf' (a local model folder)"]
    # mode, launch_mode and the cluster section are the operator's: whatever the recipe says
    assert errors(with_(mode="local-only", launch_mode="moon", cluster={"trainer": {"gpus": 8}})) == []


def test_a_recipe_path_is_left_to_the_runtime():
    spec = NexRLJobSpec.model_validate({"recipe": "/app/recipe/nope.yaml", "image": "i",
                                        "model": {"name": "m"}, "overrides": ["trainer.bogus=1"]})
    assert validate_job(spec) == []


def test_the_shipped_recipes_pass_as_inline_configs():
    for path in (REPO / "recipe").glob("*/*.yaml"):
        config = yaml.safe_load(path.read_text())
        if "data" in config and "rollout" in config:
            served = (config.get("inference") or {}).get("engine") == "openai"  # needs the job's vLLM
            shape = {"inference": {"replicas": 1}, "model": {"name": "m"},
                     "storage": {"existingClaim": "c"}} if served else {}
            assert errors(config, **shape) == [], path
