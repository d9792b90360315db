"""The chart's runtime image reaches the operator as `--default-image`: the image of jobs without
spec.image."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
import yaml
from helmchart import CHART, Helm, deployment_args
from nexrl_operator.main import add_arguments, operator_defaults

APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def defaults(helm: Helm, values: dict[str, Any]) -> Any:
    args = deployment_args(helm.template(values))
    assert args[0] == "run", args
    return operator_defaults(add_arguments(argparse.ArgumentParser()).parse_args(args[1:]))


@pytest.mark.parametrize(
    ("values", "image"),
    [
        ({}, f"nexrl/nexrl:{APP_VERSION}"),  # the chart knows its runtime image: jobs need not name it
        ({"runtime": {"image": {"tag": "0.2.0"}}}, "nexrl/nexrl:0.2.0"),
        ({"runtime": {"image": {"repository": "registry.example.com/ml/nexrl"}}},
         f"registry.example.com/ml/nexrl:{APP_VERSION}"),
        ({"runtime": {"image": {"repository": ""}}}, None),  # no default: every job sets spec.image
    ],
)
def test_runtime_image_is_the_operators_default_image(helm: Helm, values: dict[str, Any], image: str | None):
    assert defaults(helm, values).image == image


def test_runtime_image_values_are_checked(helm: Helm) -> None:
    done = helm.run("template", "x", str(CHART), values={"runtime": {"image": {"tag": "bad tag"}}})
    assert done.returncode != 0 and "/runtime/image/tag" in done.stderr, done.stderr
