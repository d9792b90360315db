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


# --- semantic validation: every message names the field and says what is wrong in words ------

CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no source", {"recipe": None},
     "spec: set spec.recipe (a recipe path in the image) or spec.config (an inline recipe)"),
    ("both sources", {"config": {"a": 1}}, "spec.config: spec.recipe is set too; set only one of them"),
    ("storage both", {"storage": {"existingClaim": "pvc", "size": "1Gi"}},
     "spec.storage.size: spec.storage.existingClaim is set too; set only one of them"),
    ("storage neither", {"storage": {}}, "spec.storage: set spec.storage.existingClaim or spec.storage.size"),
    ("class with claim", {"storage": {"existingClaim": "p", "storageClassName": "x"}},
     "spec.storage.storageClassName: only used when the operator creates the claim (spec.storage.size); "
     "remove it"),
    ("gpus without trainer nodes", {"trainer": {"nodes": 0, "gpusPerNode": 2}},
     "spec.trainer.gpusPerNode: 2 GPU(s) per node, but spec.trainer.nodes is 0, so no trainer pod would "
     "hold them; set spec.trainer.nodes >= 1 or spec.trainer.gpusPerNode to 0 (train on the Ray head)"),
    ("service without trainer", {"mode": "training-service", "trainer": {"nodes": 0}},
     "spec.trainer.nodes: training-service mode needs 1 trainer node (got 0)"),
    ("service without inference", {"mode": "training-service", "inference": {"replicas": 0}},
     "spec.inference.replicas: training-service mode needs at least 1 inference replica (got 0)"),
    ("inference without model", {"model": None},
     "spec.model is required when spec.inference.replicas > 0 (vLLM serves it): set spec.model.name"),
    ("no image, no default", {"image": None},
     "spec.image is required: this operator has no default runtime image "
     "(nexrl-operator --default-image, the chart's runtime.image)"),
    ("gpu in resources", {"trainer": {"resources": {"limits": {"nvidia.com/gpu": 8}}}},
     "spec.trainer.resources.limits['nvidia.com/gpu']: GPU counts come from spec.trainer.gpusPerNode, "
     "not from resources; remove it (got 8)"),
    ("gpu in head requests", {"head": {"resources": {"requests": {"nvidia.com/gpu": 1}}}},
     "spec.head.resources.requests['nvidia.com/gpu']: GPU counts come from nowhere (the Ray head is a CPU "
     "pod), not from resources; remove it (got 1)"),
    ("mode override", {"overrides": ["total_steps=3", "mode=training-service"]},
     "spec.overrides[1]: 'mode=training-service' sets mode, which the operator sets from spec.mode; "
     "remove it"),
    ("launch_mode override", {"overrides": ["++launch_mode=local"]},
     "spec.overrides[0]: '++launch_mode=local' sets launch_mode, which the operator sets to ray (the job "
     "runs on its Ray cluster); remove it"),
    ("cluster override", {"overrides": ["+cluster.namespace=x"]},
     "spec.overrides[0]: '+cluster.namespace=x' sets cluster.namespace, which the operator sets from the "
     "spec (the job's cluster.yaml); remove it"),
    ("not an override", {"overrides": ["total_steps"]},
     "spec.overrides[0]: 'total_steps' is not a Hydra override: write key=value, +key=value, ++key=value "
     "or ~key"),
    ("engine port", {"inference": {"args": ["--port=9000"]}},
     "spec.inference.args[0]: --port is set by the operator (port 8000, spec.model, "
     "spec.inference.gpusPerReplica); remove it"),
    ("engine tp", {"inference": {"args": ["-tp", "2"]}},
     "spec.inference.args[0]: -tp is set by the operator (port 8000, spec.model, "
     "spec.inference.gpusPerReplica); remove it"),
]


@pytest.mark.parametrize(("patch", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_says_field_and_fix_in_words(patch: dict[str, Any], text: str):
    base = {"recipe": "/r.yaml", "image": "img", "model": {"name": "m"}}
    errors = validate_job(NexRLJobSpec.model_validate({**base, **patch}))
    assert [str(e) for e in errors] == [text]
    assert "=None" not in text and "Field required" not in text


def test_valid_spec_has_no_errors():
    assert validate_job(spec(model={"name": "m"}, overrides=["~validation", "+x.y=1"]), name="ok-name") == []


def test_training_service_with_one_rank_is_valid():
    one = spec(mode="training-service", model={"name": "m"}, trainer={"nodes": 1, "gpusPerNode": 1})
    cpu = spec(mode="training-service", model={"name": "m"}, trainer={"nodes": 1, "gpusPerNode": 0})
    assert validate_job(one) == validate_job(cpu) == []
    # self-hosted may reserve more trainer GPUs (rank 0 trains, docs/distributed.md)
    assert validate_job(spec(model={"name": "m"}, trainer={"nodes": 2, "gpusPerNode": 8})) == []


def test_the_operators_default_image_makes_spec_image_optional():
    imageless = spec(image=None, model={"name": "m"})
    assert imageless.image is None
    assert validate_job(imageless, default_image="nexrl/nexrl:0.1.0") == []
    (error,) = validate_job(imageless)
    assert error.field == "spec.image" and str(error).startswith("spec.image is required")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("a" * (MAX_JOB_NAME_LENGTH + 1),
         f"metadata.name is {MAX_JOB_NAME_LENGTH + 1} characters long; "
         f"at most {MAX_JOB_NAME_LENGTH} are allowed"),
        ("1abc", "metadata.name: must be a DNS-1035 label"),
        ("has.dot", "metadata.name: must be a DNS-1035 label"),
        ("Upper", "metadata.name: must be a DNS-1035 label"),
        ("trailing-", "metadata.name: must be a DNS-1035 label"),
    ],
)
def test_bad_job_names(name: str, text: str):
    (error,) = validate_job(spec(model={"name": "m"}), name=name)
    assert error.field == "metadata.name" and error.value == name
    assert str(error).startswith(text) and str(error).endswith(f"(got {name!r})")


def job(**spec_fields: Any) -> dict[str, Any]:
    spec = {"image": "i", "recipe": "r", "model": {"name": "m"}, **spec_fields}
    return {"metadata": {"name": "x"}, "spec": spec}


PARSE_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown field", job(gpus=4), ["spec.gpus: unknown field"]),
    ("unknown field, close to a known one", job(inference={"gpusPerReplcia": 2}),
     ["spec.inference.gpusPerReplcia: unknown field (did you mean 'gpusPerReplica'?)"]),
    ("missing field: no parent dict as its value", job(model={}), ["spec.model.name is required"]),
    ("missing spec", {"metadata": {"name": "x"}}, ["spec is required"]),
    ("not an integer", job(trainer={"nodes": "many"}),
     ["spec.trainer.nodes: must be an integer (got 'many')"]),
    ("below the minimum", job(inference={"replicas": -1}),
     ["spec.inference.replicas: must be greater than or equal to 0 (got -1)"]),
    ("above the maximum", job(inference={"gpusPerReplica": 65}),
     ["spec.inference.gpusPerReplica: must be less than or equal to 64 (got 65)"]),
    ("not one of", job(mode="colocated"),
     ["spec.mode: must be one of 'self-hosted', 'training-service' (got 'colocated')"]),
    ("empty string", job(inference={"image": ""}), ["spec.inference.image: must not be empty (got '')"]),
    ("not a string", job(image={"name": "x"}), ["spec.image: must be a string (got {'name': 'x'})"]),
    ("pattern", job(storage={"size": "1Gi", "mountPath": "data"}),
     ["spec.storage.mountPath: must match the pattern ^/ (got 'data')"]),
    ("a union: one problem", job(trainer={"resources": {"limits": {"cpu": 0.5}}}),
     ["spec.trainer.resources.limits.cpu: must be an integer or a string (got 0.5)"]),
    ("key with a dot", job(trainer={"resources": {"limits": {"example.com/fpga": [1]}}}),
     ["spec.trainer.resources.limits['example.com/fpga']: must be an integer or a string (got [1])"]),
    ("list item", job(scheduling={"tolerations": [{"effect": "Sometimes"}]}),
     ["spec.scheduling.tolerations[0].effect: must be one of 'NoSchedule', 'PreferNoSchedule', 'NoExecute' "
      "(got 'Sometimes')"]),
    ("not an object", job(trainer=3), ["spec.trainer: must be an object (a mapping) (got 3)"]),
    ("semantic after schema", job(model=None),
     ["spec.model is required when spec.inference.replicas > 0 (vLLM serves it): set spec.model.name"]),
]


@pytest.mark.parametrize(("body", "texts"), [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES])
def test_parse_job_words_every_schema_error(body: dict[str, Any], texts: list[str]):
    with pytest.raises(JobValidationError) as info:
        parse_job(body)
    assert [str(e) for e in info.value.errors] == texts
    assert str(info.value) == "; ".join(texts)
    assert all(isinstance(e, FieldError) for e in info.value.errors)
    for python in ("Field required", "Extra inputs", "Input should", "=None"):  # pydantic's words
        assert not any(python in t for t in texts)


def test_parse_job_takes_the_operators_default_image():
    body = job()
    del body["spec"]["image"]
    with pytest.raises(JobValidationError, match=r"^spec\.image is required"):
        parse_job(body)
    assert parse_job(body, default_image="nexrl/nexrl:0.1.0").spec.image is None


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
