"""`nexrl-operator render` and `crds`, through main(argv) and once through the installed script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from nexrl_operator.cli import PLACEHOLDER_UID, main
from nexrl_operator.crdgen import CRDS, crd_yaml

REPO = Path(__file__).resolve().parents[2]
TRAINING_SERVICE = REPO / "examples" / "nexrljob-qwen2.5-7b-training-service.yaml"
SELF_HOSTED = REPO / "examples" / "nexrljob-qwen2.5-1.5b-gsm8k.yaml"


def render(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    code = main(["render", *argv])
    out, err = capsys.readouterr()
    return code, [d for d in yaml.safe_load_all(out) if d], err


def test_render_prints_every_child(capsys: pytest.CaptureFixture[str]):
    code, docs, err = render(capsys, "-f", str(TRAINING_SERVICE))
    assert code == 0 and err == ""
    assert [d["kind"] for d in docs] == [
        "ConfigMap",
        "PersistentVolumeClaim",
        "Service",
        "Deployment",
        "Service",
        "StatefulSet",
        "RayJob",
    ]
    assert {d["metadata"]["namespace"] for d in docs} == {"team-a"}  # from the job's metadata
    assert {d["metadata"]["ownerReferences"][0]["uid"] for d in docs} == {PLACEHOLDER_UID}
    cluster = yaml.safe_load(docs[0]["data"]["cluster.yaml"])
    assert cluster["inference"]["base_urls"] == ["http://qwen25-7b-math-ts-inference.team-a.svc:8000"]


def test_render_namespace_flag_and_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.stdin", SELF_HOSTED.open())
    code, docs, _ = render(capsys, "-f", "-", "--namespace", "research", "--uid", "abc")
    assert code == 0 and {d["metadata"]["namespace"] for d in docs} == {"research"}
    assert docs[-1]["metadata"]["ownerReferences"][0]["uid"] == "abc"


def test_render_reports_invalid_jobs_by_field(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    job = yaml.safe_load(SELF_HOSTED.read_text())
    job["spec"]["trainer"] = {"nodes": 0, "gpusPerNode": 4}
    job["spec"]["config"] = {"total_steps": 1}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(job))
    code, docs, err = render(capsys, "-f", str(path))
    assert code == 1 and docs == []
    assert "spec.config=" in err and "spec.trainer.gpusPerNode=4" in err


def test_render_rejects_other_kinds(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    code, _, err = render(capsys, "-f", str(path))
    assert code == 2 and "expected kind NexRLJob" in err


ALL_CRDS = "---\n".join(crd_yaml(info) for info in CRDS)


def test_crds_to_stdout_and_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    assert main(["crds"]) == 0
    assert capsys.readouterr().out == ALL_CRDS
    assert [d["spec"]["names"]["kind"] for d in yaml.safe_load_all(ALL_CRDS)] == ["NexRLJob", "NexRLQuota"]
    target = tmp_path / "out"
    assert main(["crds", "-o", str(target)]) == 0
    assert {f.name: f.read_text() for f in target.iterdir()} == {i.filename: crd_yaml(i) for i in CRDS}
    assert main(["crds", "-o", str(tmp_path / "crd.yaml")]) == 2
    assert "takes a folder" in capsys.readouterr().err


def test_installed_script_runs():
    script = shutil.which("nexrl-operator") or str(
        Path(__file__).resolve().parents[2] / ".venv/bin/nexrl-operator"
    )
    result = subprocess.run([script, "crds"], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == ALL_CRDS
