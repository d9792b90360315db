"""Shared fixtures of the operator unit tests: schema validators for every kind we generate.

Core kinds are checked with kubernetes-validate (strict, pinned Kubernetes version); RayJob and
RayCluster with the KubeRay CRDs (found or downloaded by kuberay_schemas.py); NexRLJob with our CRD.
Every CRD schema is made strict first (unknown fields are errors, as with `kubectl --validate=strict`).
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from nexrl_operator.api import NexRLJob
from nexrl_operator.crdgen import build_crd

sys.path.insert(0, str(Path(__file__).parent))

import kuberay_schemas

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = [
    *sorted((REPO / "examples").glob("nexrljob-*.yaml")),
    *sorted((REPO / "examples" / "cpu").glob("*.yaml")),
]
"""The GPU examples and their CPU twins (examples/cpu, run in the cluster box)."""
KUBERNETES_VERSION = "1.33"
"""Oldest Kubernetes we support: StatefulSet pod-index labels (1.28+), CRD CEL rules (1.29 GA)."""

Validate = Callable[[dict[str, Any]], None]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of an OpenAPI schema where objects with declared properties reject unknown ones."""
    schema = copy.deepcopy(schema)
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return schema


def crd_validator(crd: dict[str, Any], version: str) -> jsonschema.Draft7Validator:
    """A strict validator of one version of a CRD."""
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft7Validator(strict(served["schema"]["openAPIV3Schema"]))


def _raise_first(validator: jsonschema.Draft7Validator, obj: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:5]]
        raise AssertionError(
            f"{obj.get('kind')} {obj['metadata'].get('name')} is invalid:\n" + "\n".join(lines)
        )


@functools.cache
def kuberay_folder() -> Path:
    return kuberay_schemas.locate()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """No KubeRay CRDs: one clear error before any test runs, not one error per test."""
    if any("kuberay_validators" in getattr(item, "fixturenames", ()) for item in items):
        try:
            kuberay_folder()
        except kuberay_schemas.SchemasMissing as exc:
            raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def kuberay_validators() -> dict[str, jsonschema.Draft7Validator]:
    """Kind -> strict validator of KubeRay's ray.io/v1 schema."""
    out = {}
    for kind, file in (("RayJob", "ray.io_rayjobs.yaml"), ("RayCluster", "ray.io_rayclusters.yaml")):
        crd = yaml.load((kuberay_folder() / file).read_text(), Loader=_Loader)
        out[kind] = crd_validator(crd, "v1")
    return out


@pytest.fixture(scope="session")
def validate_manifest(kuberay_validators: dict[str, jsonschema.Draft7Validator]) -> Validate:
    """Check one generated object against its kind's schema; raises AssertionError naming the field."""
    nexrl = crd_validator(build_crd(), "v1alpha1")

    def check(obj: dict[str, Any]) -> None:
        api_version, kind = obj["apiVersion"], obj["kind"]
        if api_version == "ray.io/v1":
            _raise_first(kuberay_validators[kind], obj)
        elif kind == "NexRLJob":
            _raise_first(nexrl, obj)
        else:
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{kind} {obj['metadata'].get('name')}: {exc.message}") from None

    return check


def _make_job(name: str = "demo", **spec: Any) -> NexRLJob:
    body = {"recipe": "/app/recipe/gsm8k/gsm8k.yaml", "image": "nexrl:test", **spec}
    if "config" in spec:
        body.pop("recipe")
    return NexRLJob.model_validate({"metadata": {"name": name}, "spec": body})


@pytest.fixture(scope="session")
def make_job() -> Callable[..., NexRLJob]:
    """Factory of NexRLJobs: a recipe and an image unless the keyword spec (API spelling) says otherwise."""
    return _make_job


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`example` parameter: each NexRLJob document under examples/."""
    if "example" in metafunc.fixturenames:
        docs = [yaml.safe_load(path.read_text()) for path in EXAMPLES]
        assert docs, "no examples/nexrljob-*.yaml found"
        metafunc.parametrize("example", docs, ids=[path.stem for path in EXAMPLES])
