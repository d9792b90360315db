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
TRAINING_SERVICE = REPO / "examples" / "nexrljob-qwen2.5-1.5b-training-service.yaml"
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
    assert {d["metadata"]["namespace"] for d in docs} == {"team-kueue"}  # from the job's metadata
    assert {d["metadata"]["ownerReferences"][0]["uid"] for d in docs} == {PLACEHOLDER_UID}
    cluster = yaml.safe_load(docs[0]["data"]["cluster.yaml"])
    assert cluster["inference"]["base_urls"] == ["http://qwen25-1p5b-gsm8k-ts-inference.team-kueue.svc:8000"]


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
    name = job["metadata"]["name"]
    assert err.splitlines() == [
        f"error: NexRLJob {name!r}: spec.config: spec.recipe is set too; set only one of them",
        f"error: NexRLJob {name!r}: spec.trainer.gpusPerNode: 4 GPU(s) per node, but spec.trainer.nodes "
        "is 0, so no trainer pod would hold them; set spec.trainer.nodes >= 1 or "
        "spec.trainer.gpusPerNode to 0 (train on the Ray head)",
    ]


def test_render_words_schema_and_inline_config_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    job = yaml.safe_load((REPO / "examples" / "nexrljob-arithmetic-cpu.yaml").read_text())
    job["spec"]["gpus"] = 2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(job))
    code, _, err = render(capsys, "-f", str(path))
    assert code == 1 and err == "error: NexRLJob 'arithmetic-cpu': spec.gpus: unknown field\n"
    del job["spec"]["gpus"]
    job["spec"]["config"]["trainer"] = {"bogus": 1}
    path.write_text(yaml.safe_dump(job))
    code, _, err = render(capsys, "-f", str(path))
    assert code == 1 and err == "error: NexRLJob 'arithmetic-cpu': spec.config.trainer.bogus: unknown field\n"


def test_render_takes_the_default_images(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    job = yaml.safe_load(SELF_HOSTED.read_text())
    del job["spec"]["image"], job["spec"]["inference"]["image"]
    path = tmp_path / "imageless.yaml"
    path.write_text(yaml.safe_dump(job))
    code, _, err = render(capsys, "-f", str(path))
    assert code == 1 and "spec.image is required" in err
    code, docs, err = render(capsys, "-f", str(path), "--default-image", "reg.example.com/nexrl:1",
                             "--default-inference-image", "vllm/vllm-openai:v1")
    assert code == 0 and err == ""
    images = {d["kind"]: yaml.safe_dump(d) for d in docs}
    assert "image: reg.example.com/nexrl:1" in images["RayJob"] and "nexrl/nexrl" not in images["RayJob"]
    assert "image: vllm/vllm-openai:v1" in images["Deployment"]


@pytest.mark.parametrize("argv", [[], ["crds"], ["render"], ["run"]])
def test_help_prints_and_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nexrl-operator")
    if argv == ["render"]:
        assert "--default-image" in out
    if argv == ["run"]:
        assert "--default-image" in out and "--default-inference-image" in out


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2 and "usage: nexrl-operator" in capsys.readouterr().err


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
