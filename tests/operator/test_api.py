"""NexRLJob models, naming limits and semantic validation."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nexrl_operator.api import NexRLJob, NexRLJobSpec, NexRLJobStatus, Phase, total_gpus
from nexrl_operator.naming import MAX_JOB_NAME_LENGTH, NAME_LIMITS, child_names
from nexrl_operator.spec_checks import FieldError, JobValidationError, parse_job, validate_job
from pydantic import ValidationError

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def spec(**fields: Any) -> NexRLJobSpec:
    return NexRLJobSpec.model_validate({"recipe": "/r.yaml", "image": "img", **fields})


def test_camel_case_in_yaml_snake_case_in_python():
    s = spec(inference={"gpusPerReplica": 4}, trainer={"gpus_per_node": 2}, ttlSecondsAfterFinished=60)
    assert (s.inference.gpus_per_replica, s.trainer.gpus_per_node, s.ttl_seconds_after_finished) == (4, 2, 60)
    dumped = s.model_dump(exclude_none=True)
    assert dumped["inference"]["gpusPerReplica"] == 4
    assert dumped["ttlSecondsAfterFinished"] == 60
    assert NexRLJobSpec.model_validate(dumped) == s


def test_defaults_and_total_gpus():
    s = spec()
    assert s.mode == "self-hosted" and s.inference.engine == "vllm" and not s.suspend
    assert total_gpus(s) == 1 * 1 + 1 * 1
    big = spec(inference={"replicas": 3, "gpusPerReplica": 2}, trainer={"nodes": 2, "gpusPerNode": 8})
    assert total_gpus(big) == 3 * 2 + 2 * 8


def test_sub_specs_are_not_shared_between_instances():
    a, b = spec(), spec()
    a.inference.args.append("--enforce-eager")
    assert b.inference.args == []


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"inference": {"replicas": -1}}, ("inference", "replicas")),
        ({"inference": {"gpusPerReplica": 0}}, ("inference", "gpusPerReplica")),
        ({"trainer": {"nodes": -1}}, ("trainer", "nodes")),
        ({"mode": "colocated"}, ("mode",)),
        ({"inference": {"engine": "sglang"}}, ("inference", "engine")),
        ({"inference": {"replicaz": 1}}, ("inference", "replicaz")),
        ({"storage": {"size": "10Gi", "mountPath": "data"}}, ("storage", "mountPath")),
        ({"trainer": {"resources": {"limits": {"cpu": 0.5}}}}, ("trainer", "resources", "limits", "cpu")),
    ],
)
def test_schema_rejects(fields: dict[str, Any], loc: tuple[str, ...]):
    with pytest.raises(ValidationError) as info:
        spec(**fields)
    assert any(err["loc"][: len(loc)] == loc for err in info.value.errors())


def test_status_keeps_unknown_keys_out_and_parses_phase():
    status = NexRLJobStatus.model_validate(
        {"phase": "Running", "step": 3, "gpus": 4, "kopf": {"progress": {}}, "children": {"rayjob": "demo"}}
    )
    assert status.phase is Phase.RUNNING and status.step == 3
    assert status.model_dump(exclude_none=True, mode="json")["phase"] == "Running"


def test_whole_object_parses_with_server_metadata():
    job = NexRLJob.model_validate(
        {
            "apiVersion": "nexrl.io/v1alpha1",
            "kind": "NexRLJob",
            "metadata": {
                "name": "a",
                "uid": "u",
                "generation": 2,
                "creationTimestamp": "2025-01-01T00:00:00Z",
            },
            "spec": {"config": {"total_steps": 1}, "image": "img"},
            "status": {"phase": "Pending"},
        }
    )
    assert job.metadata.uid == "u" and job.status is not None and job.status.phase is Phase.PENDING


# --- semantic validation ----------------------------------------------------------------------

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no source", {"recipe": None}, "spec.recipe", "spec.config"),
    ("both sources", {"config": {"a": 1}}, "spec.config", "only one"),
    ("storage both", {"storage": {"existingClaim": "pvc", "size": "1Gi"}}, "spec.storage.size", "only one"),
    ("storage neither", {"storage": {}}, "spec.storage", "existingClaim"),
    (
        "class with claim",
        {"storage": {"existingClaim": "p", "storageClassName": "x"}},
        "storageClassName",
        "size",
    ),
    (
        "gpus without trainer nodes",
        {"trainer": {"nodes": 0, "gpusPerNode": 2}},
        "spec.trainer.gpusPerNode",
        "spec.trainer.nodes is 0",
    ),
    (
        "service without trainer",
        {"mode": "training-service", "trainer": {"nodes": 0}},
        "spec.trainer.nodes",
        "at least 1",
    ),
    (
        "service without inference",
        {"mode": "training-service", "inference": {"replicas": 0}},
        "replicas",
        "at least",
    ),
    ("inference without model", {"model": None}, "spec.model", "spec.model.name is required"),
    (
        "gpu in resources",
        {"trainer": {"resources": {"limits": {"nvidia.com/gpu": 8}}}},
        "spec.trainer.resources.limits['nvidia.com/gpu']",
        "spec.trainer.gpusPerNode",
    ),
    (
        "mode override",
        {"overrides": ["total_steps=3", "mode=training-service"]},
        "spec.overrides[1]",
        "spec.mode",
    ),
    ("cluster override", {"overrides": ["+cluster.namespace=x"]}, "spec.overrides[0]", "operator"),
    ("not an override", {"overrides": ["total_steps"]}, "spec.overrides[0]", "key=value"),
    ("engine port", {"inference": {"args": ["--port=9000"]}}, "spec.inference.args[0]", "--port"),
    ("engine tp", {"inference": {"args": ["-tp", "2"]}}, "spec.inference.args[0]", "gpusPerReplica"),
]


@pytest.mark.parametrize(("patch", "field", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_names_field_value_and_fix(patch: dict[str, Any], field: str, needle: str):
    base = {"recipe": "/r.yaml", "image": "img", "model": {"name": "m"}}
    errors = validate_job(NexRLJobSpec.model_validate({**base, **patch}))
    assert len(errors) == 1, errors
    (error,) = errors
    assert field in error.field and needle in error.message
    assert str(error).startswith(f"{error.field}={error.value!r}: ")


def test_valid_spec_has_no_errors():
    assert validate_job(spec(model={"name": "m"}, overrides=["~validation", "+x.y=1"]), name="ok-name") == []


@pytest.mark.parametrize("name", ["a" * (MAX_JOB_NAME_LENGTH + 1), "1abc", "has.dot", "Upper", "trailing-"])
def test_bad_job_names(name: str):
    (error,) = validate_job(spec(model={"name": "m"}), name=name)
    assert error.field == "metadata.name" and error.value == name


def test_parse_job_reports_schema_and_semantic_errors_by_field():
    with pytest.raises(JobValidationError) as info:
        parse_job(
            {"metadata": {"name": "x"}, "spec": {"image": "i", "recipe": "r", "trainer": {"nodes": "many"}}}
        )
    assert [e.field for e in info.value.errors] == ["spec.trainer.nodes"]
    with pytest.raises(JobValidationError, match=r"spec\.model=None"):
        parse_job({"metadata": {"name": "x"}, "spec": {"image": "i", "recipe": "r"}})
    assert isinstance(info.value.errors[0], FieldError)


# --- naming ---------------------------------------------------------------------------------


def test_child_names_are_deterministic_and_distinct_per_kind():
    names = child_names("job")
    assert names == {
        "config": "job-config",
        "rayjob": "job",
        "inference": "job-inference",
        "trainer": "job-trainer",
        "storage": "job-data",
    }
    assert len(set(names.values())) == len(names)


def test_limit_is_the_tightest_child_rule():
    assert MAX_JOB_NAME_LENGTH == 44
    assert MAX_JOB_NAME_LENGTH + len("-trainer") == 52  # StatefulSet: 63 - len("-") - 10-char revision hash
    assert MAX_JOB_NAME_LENGTH <= 47  # KubeRay MaxRayJobNameLength


@given(st.from_regex(r"[a-z]([-a-z0-9]{0,42}[a-z0-9])?", fullmatch=True))
def test_every_child_name_of_a_valid_job_name_is_legal(name: str):
    assert validate_job(spec(model={"name": "m"}), name=name) == []
    names = child_names(name)
    for rule in NAME_LIMITS:
        assert len(names[rule.role]) <= rule.limit
        assert DNS1035.match(names[rule.role])
    # KubeRay's derived names: RayCluster <rayjob>-xxxxx (<= 53) and its <cluster>-head-svc (<= 63)
    cluster = f"{names['rayjob']}-abcde"
    assert len(cluster) <= 53 and len(f"{cluster}-head-svc") <= 63
    # StatefulSet pods' controller-revision-hash label: <sts>-<10 chars> (<= 63)
    assert len(f"{names['trainer']}-0123456789") <= 63
