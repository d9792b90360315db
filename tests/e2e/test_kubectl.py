"""The real kubectl against the API emulator: apply (validated, twice), server-side printer columns, watch."""

from __future__ import annotations

import pathlib
import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml
from harness import NEXRL_CRD, REPO, EmulatorThread, Kubectl, wait_for

EXAMPLES = REPO / "examples"
JOB, NS = "arithmetic-cpu", "team-b"
GROUP, VERSION, PLURAL = "nexrl.io", "v1alpha1", "nexrljobs"


def printer_columns(priority: int = 0) -> list[str]:
    """The column headers kubectl prints for NexRLJobs, read from the CRD (NAME first, as the server does)."""
    crd = yaml.safe_load(NEXRL_CRD.read_text())
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    return ["NAME"] + [c["name"].upper() for c in columns if c.get("priority", 0) <= priority]


def table(output: str) -> list[dict[str, str]]:
    """kubectl's table output as rows of header -> cell; headers are separated by 2+ spaces
    ("CREATED AT" is one), cells start where their header starts."""
    lines = [line for line in output.splitlines() if line.strip()]
    headers = list(re.finditer(r"\S+(?: \S+)*", lines[0]))
    rows = []
    for line in lines[1:]:
        bounds = [h.start() for h in headers[1:]] + [len(line) + 1]
        rows.append({h.group(): line[h.start():end].strip() for h, end in zip(headers, bounds, strict=True)})
    return rows


@pytest.fixture(scope="module")
def kubectl(server: EmulatorThread, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return server.kubectl(tmp_path_factory.mktemp("kubectl"))


@pytest.fixture(scope="module")
def custom(server: EmulatorThread) -> Iterator[kubernetes.client.CustomObjectsApi]:
    with server.api_client() as api:
        yield kubernetes.client.CustomObjectsApi(api)


@pytest.fixture(scope="module")
def applied(kubectl: Kubectl, server: EmulatorThread) -> dict[str, Any]:
    """The namespaces and the arithmetic CPU job, applied as the examples say (validation on)."""
    namespaces = kubectl("apply", "-f", str(EXAMPLES / "namespaces.yaml"))
    assert namespaces.stdout.count("created") == 3, namespaces.stdout
    job = kubectl("apply", "-f", str(EXAMPLES / "nexrljob-arithmetic-cpu.yaml"))
    assert job.stdout.strip() == f"nexrljob.nexrl.io/{JOB} created"
    assert job.stderr == ""  # no validation or patch warnings
    return {"namespaces": namespaces, "job": job}


def set_status(custom: kubernetes.client.CustomObjectsApi, **status: Any) -> None:
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, JOB, {"status": status})


def test_apply_twice_is_unchanged_then_a_change_is_a_merge_patch(
        applied: dict[str, Any], kubectl: Kubectl, server: EmulatorThread, tmp_path: pathlib.Path) -> None:
    again = kubectl("apply", "-f", str(EXAMPLES / "nexrljob-arithmetic-cpu.yaml"))
    assert again.stdout.strip() == f"nexrljob.nexrl.io/{JOB} unchanged"
    patches = len([c for c in server.emu.calls if c.verb == "patch"])
    changed = tmp_path / "job.yaml"
    changed.write_text((EXAMPLES / "nexrljob-arithmetic-cpu.yaml").read_text().replace(
        "total_steps: 50", "total_steps: 60"))
    configured = kubectl("apply", "-f", str(changed))
    assert configured.stdout.strip() == f"nexrljob.nexrl.io/{JOB} configured", configured.stderr
    assert configured.stderr == ""
    [job] = [j for j in server.live(GROUP, VERSION, PLURAL) if j["metadata"]["name"] == JOB]
    assert job["spec"]["config"]["total_steps"] == 60 and job["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in job["metadata"]["annotations"]
    new_patches = [c for c in server.emu.calls if c.verb == "patch"][patches:]
    assert [(c.resource, c.name, c.status) for c in new_patches] == [(PLURAL, JOB, 200)]
    kubectl("apply", "-f", str(EXAMPLES / "nexrljob-arithmetic-cpu.yaml"))  # back to the example


def test_apply_patches_a_namespace_label(applied: dict[str, Any], kubectl: Kubectl, server: EmulatorThread,
                                         tmp_path: pathlib.Path) -> None:
    relabelled = tmp_path / "namespaces.yaml"
    relabelled.write_text((EXAMPLES / "namespaces.yaml").read_text().replace(
        "labels: {nexrl.io/quota: research}", "labels: {nexrl.io/quota: research, team: b}"))
    done = kubectl("apply", "-f", str(relabelled))
    assert "namespace/team-b configured" in done.stdout and "namespace/team-a unchanged" in done.stdout
    assert done.stderr == ""
    [team_b] = [n for n in server.live("", "v1", "namespaces") if n["metadata"]["name"] == "team-b"]
    assert team_b["metadata"]["labels"] == {"nexrl.io/quota": "research", "team": "b"}
    kubectl("apply", "-f", str(EXAMPLES / "namespaces.yaml"))
    [team_b] = [n for n in server.live("", "v1", "namespaces") if n["metadata"]["name"] == "team-b"]
    assert team_b["metadata"]["labels"] == {"nexrl.io/quota": "research"}  # the 3-way patch removed it


def test_apply_rejects_an_unknown_field_with_the_servers_strict_error(
        applied: dict[str, Any], kubectl: Kubectl, tmp_path: pathlib.Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text((EXAMPLES / "nexrljob-arithmetic-cpu.yaml").read_text().replace(
        "name: arithmetic-cpu\n", "name: typo-job\n").replace("  image: ", "  imagee: "))
    done = kubectl("apply", "-f", str(typo), check=False)
    assert done.returncode == 1
    assert 'strict decoding error: unknown field "spec.imagee"' in done.stderr
    assert kubectl("get", "nexrljob", "typo-job", "-n", NS, check=False).returncode == 1  # not created


def test_get_prints_the_crd_printer_columns_with_status_values(
        applied: dict[str, Any], kubectl: Kubectl, custom: kubernetes.client.CustomObjectsApi) -> None:
    set_status(custom, phase="Running", step=7, reward=0.8125, gpus=0, heldGpus=0, message="step 7 of 50")
    out = kubectl("get", "nexrljobs", "-n", NS).stdout
    assert out.split("\n")[0].split() == printer_columns()
    [row] = table(out)
    assert {k: row[k] for k in ("NAME", "PHASE", "STEP", "REWARD", "REQUESTED", "HELD")} == {
        "NAME": JOB, "PHASE": "Running", "STEP": "7", "REWARD": "0.8125", "REQUESTED": "0", "HELD": "0"}
    assert row["AGE"].endswith(("s", "m")) and row["AGE"][0].isdigit()
    wide = kubectl("get", "nexrljobs", "-n", NS, "-o", "wide").stdout
    assert wide.split("\n")[0].split() == printer_columns(priority=1)
    assert table(wide)[0]["MESSAGE"] == "step 7 of 50"


def test_missing_status_fields_are_empty_cells(applied: dict[str, Any], kubectl: Kubectl,
                                               server: EmulatorThread) -> None:
    server.run(lambda: server.emu.apply(GROUP, VERSION, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "NexRLJob",
        "metadata": {"name": "fresh", "namespace": "team-a"}, "spec": {"image": "x"}}))
    [row] = table(kubectl("get", "nexrljobs", "-n", "team-a").stdout)
    assert row["NAME"] == "fresh" and row["PHASE"] == row["STEP"] == row["REWARD"] == ""
    both = table(kubectl("get", "nexrljobs", "-A").stdout)
    assert [(r["NAMESPACE"], r["NAME"]) for r in both] == [("team-a", "fresh"), (NS, JOB)]


def test_get_jsonpath_yaml_and_describe(applied: dict[str, Any], kubectl: Kubectl, server: EmulatorThread,
                                        custom: kubernetes.client.CustomObjectsApi) -> None:
    set_status(custom, phase="Running", step=9, reward=0.5)
    path = "{.items[0].metadata.name} {.items[0].status.step} {.items[0].spec.rollout.workers}"
    assert kubectl("get", "nexrljobs", "-n", NS, "-o", f"jsonpath={path}").stdout == f"{JOB} 9 2"
    as_yaml = yaml.safe_load(kubectl("get", "nexrljob", JOB, "-n", NS, "-o", "yaml").stdout)
    assert as_yaml["kind"] == "NexRLJob" and as_yaml["status"]["step"] == 9
    uid = as_yaml["metadata"]["uid"]
    with server.api_client() as api:
        kubernetes.client.CoreV1Api(api).create_namespaced_event(NS, {
            "metadata": {"name": "arithmetic-cpu.1"}, "reason": "Admitted", "message": "quota research",
            "type": "Normal", "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NexRLJob",
                                                 "name": JOB, "namespace": NS, "uid": uid}})
    described = kubectl("describe", "nexrljob", JOB, "-n", NS).stdout
    assert "Phase:" in described and "Running" in described
    assert "Admitted" in described and "quota research" in described  # events found by field selector


def test_get_watch_prints_a_row_per_change(applied: dict[str, Any], kubectl: Kubectl,
                                           custom: kubernetes.client.CustomObjectsApi) -> None:
    set_status(custom, phase="Running", step=10, reward=0.25)
    proc = subprocess.Popen(kubectl.command("get", "nexrljobs", "-n", NS, "-w"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    seen: list[str] = []

    def saw(text: str) -> bool:
        while not lines.empty():
            seen.append(lines.get())
        return any(text in line for line in seen)

    try:
        wait_for(lambda: saw(" 10 "), 15, what="kubectl get -w to print the job at step 10")
        set_status(custom, phase="Succeeded", step=50, reward=0.9375)
        wait_for(lambda: saw("Succeeded"), 15, what="kubectl get -w to print the Succeeded row")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert seen[0].split() == printer_columns()  # headers once
    assert not any(line.split()[:1] == ["NAME"] for line in seen[1:])
    last = seen[-1].split()
    assert last[:4] == [JOB, "Succeeded", "50", "0.9375"]


def test_get_configmaps_and_namespaces_use_the_default_table(applied: dict[str, Any], kubectl: Kubectl,
                                                             server: EmulatorThread) -> None:
    with server.api_client() as api:
        kubernetes.client.CoreV1Api(api).create_namespaced_config_map(
            NS, {"metadata": {"name": "settings"}, "data": {"a": "1"}})
    out = kubectl("get", "configmaps", "-n", NS).stdout
    assert out.split("\n")[0].split() == ["NAME", "CREATED", "AT"]
    [row] = table(out)
    assert row["NAME"] == "settings" and row["CREATED AT"].endswith("Z")
    names = [r["NAME"] for r in table(kubectl("get", "ns").stdout)]
    assert names == ["default", "team-a", "team-b", "team-kueue"]
    assert kubectl("get", "cm", "settings", "-n", NS, "-o", "jsonpath={.data.a}").stdout == "1"
