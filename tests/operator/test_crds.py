"""The generated CRDs: committed copies current, structural, valid CRDs, in step with the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from nexrl_operator.api import NexRLJobSpec
from nexrl_operator.crdgen import CRDS, JOB_CRD, CrdInfo, build_crd, crd_yaml
from nexrl_operator.naming import MAX_JOB_NAME_LENGTH
from nexrl_operator.spec_checks import parse_job

from nexrl_runtime.config.schema import NexRLConfig

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
NOT_STRUCTURAL = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "const", "uniqueItems"}
Schema = dict[str, Any]


def root_schema(info: CrdInfo = JOB_CRD) -> Schema:
    (version,) = build_crd(info)["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def schema_nodes(node: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """(path, node) of every schema node below `node` (properties, items, additionalProperties)."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from schema_nodes(node[key], f"{path}[{key}]")


@pytest.mark.parametrize("info", CRDS, ids=lambda i: i.kind)
def test_committed_crd_is_up_to_date(info: CrdInfo):
    stale = "crds/ is stale: run `nexrl-operator crds -o crds`"
    assert (CRD_DIR / info.filename).read_text() == crd_yaml(info), stale


def test_crds_folder_holds_exactly_the_generated_crds():
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(i.filename for i in CRDS)


@pytest.mark.parametrize("info", CRDS, ids=lambda i: i.kind)
def test_crd_is_a_valid_customresourcedefinition(info: CrdInfo):
    kubernetes_validate.validate(build_crd(info), "1.33", strict=True)


def test_crd_identity():
    spec = build_crd()["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["kind"], spec["names"]["shortNames"]) == (
        "nexrl.io",
        "Namespaced",
        "NexRLJob",
        ["nrl"],
    )
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:6] == [
        "Phase",
        "Step",
        "Reward",
        "Requested",
        "Held",
        "Age",
    ]


def test_gpu_columns_show_what_a_job_requests_and_what_it_holds():
    columns = {c["name"]: c for c in JOB_CRD.printer_columns}
    paths = (columns["Requested"]["jsonPath"], columns["Held"]["jsonPath"])
    assert paths == (".status.gpus", ".status.heldGpus")
    status = root_schema()["properties"]["status"]["properties"]
    assert "holds" in status["heldGpus"]["description"] and "requests" in status["gpus"]["description"]


@pytest.mark.parametrize("info", CRDS, ids=lambda i: i.kind)
def test_schema_is_structural(info: CrdInfo):
    for path, node in schema_nodes(root_schema(info)):
        assert not NOT_STRUCTURAL & node.keys(), f"{path}: {NOT_STRUCTURAL & node.keys()}"
        typed = (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        )
        assert typed, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
        if "default" in node:
            jsonschema.validate(node["default"], {k: v for k, v in node.items() if k != "default"})


@pytest.mark.parametrize("info", CRDS, ids=lambda i: i.kind)
def test_printer_columns_point_at_schema_fields(info: CrdInfo):
    properties = root_schema(info)["properties"]
    for column in info.printer_columns:
        path = column["jsonPath"].split(".")[1:]
        if path[0] in ("spec", "status"):
            fields = properties[path[0]]["properties"]
            assert path[1] in fields, column
            kind = {"integer": "integer", "number": "number", "string": "string"}[column["type"]]
            assert fields[path[1]]["type"] == kind, column


def test_name_rule_uses_the_naming_limit():
    rules = [r["rule"] for r in root_schema()["x-kubernetes-validations"]]
    assert f"self.metadata.name.size() <= {MAX_JOB_NAME_LENGTH}" in rules


def test_spec_rules_are_cel():
    spec = root_schema()["properties"]["spec"]
    assert spec["x-kubernetes-validations"][0]["rule"] == "has(self.recipe) != has(self.config)"
    storage = spec["properties"]["storage"]
    assert storage["x-kubernetes-validations"][0]["rule"] == "has(self.existingClaim) != has(self.size)"
    assert "default" not in storage and "default" not in spec["properties"]["model"]


def apply_defaults(schema: Schema, value: Any) -> Any:
    """What the API server's defaulting does: fill absent properties that have a default, recursively."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for name, sub in schema.get("properties", {}).items():
        if name not in out and "default" in sub:
            out[name] = sub["default"]
        if name in out:
            out[name] = apply_defaults(sub, out[name])
    return out


@pytest.mark.parametrize(
    "spec",
    [
        {"recipe": "r", "image": "i"},
        {"recipe": "r", "image": "i", "inference": {"replicas": 0}, "storage": {"size": "1Gi"}},
        {"config": {"a": 1}, "image": "i", "trainer": {}, "scheduling": {"queueName": "q"}},
    ],
)
def test_server_defaults_equal_model_defaults(spec: Schema):
    defaulted = apply_defaults(root_schema()["properties"]["spec"], spec)
    assert defaulted != spec
    assert NexRLJobSpec.model_validate(defaulted) == NexRLJobSpec.model_validate(spec)


def test_examples_are_valid_jobs(example: Schema):
    job = parse_job(example)  # schema + semantic validation, name included
    assert job.spec.image
    if job.spec.config is not None:
        NexRLConfig.model_validate(job.spec.config)  # an inline recipe must be a valid runtime config
