"""The Dockerfile (no Docker engine here): hadolint, its targets, and the operator image's packages."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helmchart import REPO, get_tool
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DOCKERFILE = REPO / "Dockerfile"
OPERATOR_REQUIREMENTS = REPO / "docker" / "operator-requirements.txt"
ML_STACK = {"torch", "transformers", "tokenizers", "safetensors", "vllm", "ray", "pyarrow", "matplotlib"}

# Imports every module of nexrl_operator (and kopf) with every installed package hidden that
# `pip install -r operator-requirements.txt` would not bring: the operator image is that plus nexrl.
IMPORT_CHECK = r"""
import importlib, importlib.metadata as md, pkgutil, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

todo = [Requirement(line) for line in open(sys.argv[1]).read().splitlines() if line and line[0] != "#"]
closure = set()
while todo:
    req = todo.pop()
    name = canonicalize_name(req.name)
    if name in closure:
        continue
    closure.add(name)
    for dep in md.requires(name) or []:
        dep = Requirement(dep)
        if dep.marker is None or dep.marker.evaluate({"extra": ""}):
            todo.append(dep)
installed = md.packages_distributions()
allowed = {top for top, dists in installed.items() if any(canonicalize_name(d) in closure for d in dists)}
allowed |= {"nexrl_operator", "nexrl_runtime"}  # nexrl itself, installed with --no-deps
for top in installed.keys() - allowed - set(sys.modules):
    sys.modules[top] = None  # as if absent: `import` raises ModuleNotFoundError, find_spec() gives None
import kopf, nexrl_operator
for module in pkgutil.walk_packages(nexrl_operator.__path__, "nexrl_operator."):
    importlib.import_module(module.name)
print(sorted(closure))
"""


def stages() -> dict[str, str]:
    """Stage name -> its instructions (line continuations joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if match := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE):
            name = match.group(1)
        if name:
            out[name] = out.get(name, "") + line + "\n"
    return out


def requirements(lines: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {canonicalize_name(r.name): r for r in reqs}


def test_hadolint_passes() -> None:
    try:
        hadolint = get_tool("hadolint")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    done = subprocess.run([hadolint, "--failure-threshold", "style", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("target", ["operator", "runtime"])
def test_targets_run_as_non_root_and_are_labelled(target: str) -> None:
    stage = stages()[target]
    users = re.findall(r"^USER\s+(\S+)", stage, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    for label in ("title", "version", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in stage


def test_operator_target_installs_nexrl_without_its_ml_dependencies() -> None:
    stage = stages()["operator"]
    assert re.search(r"pip install --no-cache-dir --no-deps /wheels/nexrl-\*\.whl", stage)
    assert f"COPY {OPERATOR_REQUIREMENTS.relative_to(REPO)} " in stage
    assert "-r /tmp/operator-requirements.txt" in stage
    names = requirements(OPERATOR_REQUIREMENTS.read_text().splitlines())
    assert names and not names.keys() & ML_STACK, names.keys() & ML_STACK


def test_operator_requirements_match_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = requirements(project["dependencies"] + project["optional-dependencies"]["operator"])
    for name, req in requirements(OPERATOR_REQUIREMENTS.read_text().splitlines()).items():
        assert name in declared and str(req) == str(declared[name]), (req, declared.get(name))
    extra = requirements(project["optional-dependencies"]["operator"])
    assert extra.keys() <= requirements(OPERATOR_REQUIREMENTS.read_text().splitlines()).keys()


def test_the_operator_imports_with_only_the_operator_images_packages() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK, str(OPERATOR_REQUIREMENTS)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch" not in done.stdout and "transformers" not in done.stdout


def test_runtime_target_keeps_vllms_torch_and_ships_the_recipes() -> None:
    stage = stages()["runtime"]
    assert re.search(r"^FROM \$\{VLLM_IMAGE\} AS runtime", stage, re.MULTILINE)
    assert "-c /tmp/keep.txt" in stage and "[ray]" in stage
    assert re.search(r"^COPY .*recipe \./recipe", stage, re.MULTILINE)


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    kept = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
            if line.startswith("!")}
    copies = re.findall(r"^COPY (?!--from)(.+)$", "".join(stages().values()), re.MULTILINE)
    sources = [word for line in copies for word in line.split()[:-1] if not word.startswith("--")]
    assert sources
    for source in sources:
        assert Path(source).parts[0] in kept, source
        assert (REPO / source).exists(), source


@pytest.mark.parametrize("target", ["wheel", "operator"])
def test_python_stages_can_build_offline_from_the_wheelhouse(target: str) -> None:
    """Every pip of the Python stages also reads docker/wheelhouse/ (tests/image fills it on the host and
    passes PIP_NO_INDEX=1, as pip in a build container here cannot reach PyPI); the base is a build arg."""
    stage = stages()[target]
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS ", stage, re.MULTILINE)
    assert re.search(r"^ARG PIP_NO_INDEX$", stage, re.MULTILINE)  # no default: unset unless passed
    pips = re.findall(r"^RUN (.*\bpip (?:install|wheel)\b.*)$", stage, re.MULTILINE)
    assert pips
    for run in pips:
        if "/wheels/nexrl-" in run:
            continue  # the nexrl wheel of the wheel stage, --no-deps
        assert "--mount=type=bind,source=docker/wheelhouse,target=/wheelhouse" in run, run
        assert "--find-links /wheelhouse" in run, run
    # a bind mount's source must exist in every checkout: git keeps the folder by its README, no wheels
    wheelhouse = REPO / "docker" / "wheelhouse"
    assert (wheelhouse / "README.md").is_file()
    assert (wheelhouse / ".gitignore").read_text().split() == ["*", "!.gitignore", "!README.md"]
