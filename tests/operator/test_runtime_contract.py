"""The operator's side of the operator-runtime contract: when it runs the vLLM servers, the runtime
is told to use them over HTTP and where the weights go; user overrides cannot say otherwise; and
shapes the runtime cannot run are refused at validation, naming the field, before any GPU."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from nexrl_operator.api import NexRLJob, NexRLJobSpec
from nexrl_operator.builders import build_children
from nexrl_operator.builders.commands import spec_overrides
from nexrl_operator.recipe_view import compose
from nexrl_operator.spec_checks import validate_job

MODEL = {"name": "Qwen/Qwen2.5-1.5B-Instruct", "path": "/models/qwen"}
RECIPE = {
    "total_steps": 5,
    "data": {"path": "/app/recipe/arithmetic/data/train.jsonl"},
    "rollout": {"evaluator": "/app/recipe/arithmetic/evaluator.py:ArithmeticEvaluator"},
}
SHARED = {"existingClaim": "shared", "mountPath": "/shared/"}


def spec(**fields: Any) -> NexRLJobSpec:
    body = {"recipe": "/app/recipe/gsm8k/gsm8k.yaml", "image": "img", "model": MODEL, **fields}
    if "config" in fields:
        body.pop("recipe")
    return NexRLJobSpec.model_validate(body)


def problems(**fields: Any) -> list[str]:
    return [str(e) for e in validate_job(spec(**fields), name="demo")]


def test_with_replicas_the_runtime_uses_them_over_http_and_writes_weights_on_the_storage():
    overrides = spec_overrides(spec(storage=SHARED), "demo")
    assert overrides[-3:] == ["++inference.engine=openai", "++inference.base_urls=[]",
                              "++inference.weights_dir=/shared/demo/weights"]
    job = NexRLJob.model_validate({"metadata": {"name": "demo"}, "spec": spec(storage=SHARED).model_dump()})
    children = build_children(job, name="demo", namespace="ml", uid="u")
    (deployment,) = [c for c in children if c["kind"] == "Deployment"]
    (vllm,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "nexrl-data", "mountPath": "/shared/"} in vllm["volumeMounts"]  # it reads the weights
    (rayjob,) = [c for c in children if c["kind"] == "RayJob"]
    assert "++inference.weights_dir=/shared/demo/weights" in shlex.split(rayjob["spec"]["entrypoint"])
    groups = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    (trainer,) = [g for g in groups if g["groupName"] == "trainer"]
    mounts = trainer["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "nexrl-data", "mountPath": "/shared/"} in mounts  # ... that the trainer writes


def test_without_replicas_the_recipe_keeps_its_engine():
    assert not any(o.startswith("++inference.") for o in spec_overrides(spec(inference={"replicas": 0}), "d"))


def test_the_operator_wins_over_an_inline_recipes_engine():
    """Decided: with replicas the recipe's own engine (vllm, local) is replaced, not refused."""
    config = {**RECIPE, "inference": {"engine": "vllm", "base_urls": ["http://elsewhere:8000"]}}
    assert problems(config=config, storage=SHARED) == []
    found = compose(spec(config=config, storage=SHARED), "demo")
    assert found is not None
    assert found.setting("inference.engine") == (True, "openai")
    assert found.setting("inference.base_urls") == (True, [])


@pytest.mark.parametrize(("override", "why"), [
    ("inference.engine=vllm", "sets inference.engine, which the operator sets to openai when "
                              "spec.inference.replicas > 0"),
    ("++inference.base_urls=[http://x:8000]", "sets inference.base_urls, which the operator sets to []"),
    ("inference={engine: local}", "sets inference, which the operator sets to openai"),
    ("inference.weights_dir=/tmp/w", "sets inference.weights_dir, which the operator sets to "
                                     "/shared/demo/weights on spec.storage"),
    ("model.path=/other", "sets model.path, which the operator sets from spec.model.path"),
    ("output_dir=/tmp/x", "sets output_dir, which the operator sets to /shared/demo"),
    ("++launch_mode=local", "sets launch_mode, which the operator sets to ray"),
])
def test_overrides_cannot_contradict_what_the_operator_sets(override: str, why: str):
    for fields in ({}, {"config": RECIPE}):  # a recipe path or an inline recipe alike
        (problem,) = problems(overrides=[override], storage=SHARED, **fields)
        assert problem.startswith(f"spec.overrides[0]: {override!r} {why}"), problem
        assert problem.endswith("; remove it")


def test_without_replicas_the_engine_is_the_users():
    assert problems(inference={"replicas": 0}, overrides=["inference.engine=local"]) == []


def test_the_disk_route_needs_storage_the_vllm_pods_share():
    (problem,) = problems(config=RECIPE)  # weight_sync: disk, the runtime's default
    assert problem.startswith("spec.storage is required when spec.inference.replicas > 0 and "
                              "inference.weight_sync is 'disk' (the runtime's default)")
    (problem,) = problems(overrides=["inference.weight_sync=disk"])
    assert "(set in spec.overrides[0])" in problem
    assert problems(config={**RECIPE, "inference": {"weight_sync": "nccl"}}) == []
    (problem,) = problems(config=RECIPE, overrides=["inference.weight_sync=none"])
    assert problem.startswith("spec.overrides[0]: inference.weight_sync: 'none', but the runtime pushes")
    assert problems(config=RECIPE, storage=SHARED) == []
    assert problems() == []  # a recipe in the image: only the runtime reads its weight_sync


def test_no_replicas_for_an_http_engine_is_refused():
    config = {**RECIPE, "inference": {"engine": "openai"}}
    (problem,) = problems(config=config, inference={"replicas": 0})
    assert problem.startswith("spec.inference.replicas: no vLLM replica would run, but spec.config sets "
                              "inference.engine=openai")
    (problem,) = problems(inference={"replicas": 0}, overrides=["inference.engine=openai"])
    assert "but spec.overrides[0] sets inference.engine=openai" in problem
    urls = {**RECIPE, "inference": {"engine": "openai", "base_urls": ["http://mine:8000"]}}
    assert problems(config=urls, inference={"replicas": 0}) == []  # servers of the user's own


def test_training_service_takes_run_checkpoints_and_needs_trainer_nodes():
    ts = {"mode": "training-service", "storage": SHARED}
    assert problems(**ts, overrides=["checkpoint.every=5"]) == []  # the service saves its part
    assert problems(**ts, config={**RECIPE, "resume": {"mode": "auto"}}) == []
    (problem,) = problems(mode="training-service", storage=SHARED, trainer={"nodes": 0})
    assert problem == "spec.trainer.nodes: training-service mode needs 1 trainer node (got 0)"
