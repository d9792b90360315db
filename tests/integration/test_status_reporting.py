"""The runtime's progress reports on its NexRLJob, against the API emulator over real HTTP."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # the emulator and its harness

from apiserver_model import Fault
from harness import EmulatorThread

from nexrl_runtime.contract import ClusterConfig
from nexrl_runtime.reporting import (
    USER_AGENT,
    ApiAccess,
    StatusReporter,
    status_path,
    status_sinks,
)
from nexrl_runtime.tracking import Tracker

_names = itertools.count()


class FakeClock:
    """Monotonic seconds that only move when the test says so (the rate limit without sleeping)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorThread]:
    with EmulatorThread() as thread:
        thread.install_crd()
        yield thread


@pytest.fixture()
def job(server: EmulatorThread) -> tuple[str, str]:
    """A NexRLJob in a namespace of its own: (namespace, name)."""
    ns, name = f"team-{next(_names)}", "run"
    body = {"apiVersion": "nexrl.io/v1alpha1", "kind": "NexRLJob",
            "metadata": {"name": name, "namespace": ns}, "spec": {"image": "nexrl:test"}}
    server.run(lambda: server.emu.apply("nexrl.io", "v1alpha1", "nexrljobs", body))
    return ns, name


def service_account(root: Path, namespace: str, token: str = "token-1") -> Path:
    """What the kubelet mounts: token, ca.crt (here: a public CA bundle), namespace."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "token").write_text(token + "\n")
    shutil.copyfile(certifi.where(), root / "ca.crt")
    (root / "namespace").write_text(namespace)
    return root


@pytest.fixture()
def access(server: EmulatorThread, tmp_path: Path, job: tuple[str, str]) -> ApiAccess:
    """The pod's access as in_cluster() finds it, pointed at the emulator (plain HTTP)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    found = ApiAccess.in_cluster(service_account(tmp_path / "sa", job[0]), env)
    assert found is not None and found.url == server.url.replace("http://", "https://")
    return dataclasses.replace(found, url=server.url)


def status_of(server: EmulatorThread, ns: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in server.live("nexrl.io", "v1alpha1", "nexrljobs")
              if o["metadata"]["namespace"] == ns and o["metadata"]["name"] == name]
    return obj.get("status", {})


def runtime_calls(server: EmulatorThread, ns: str) -> list[Any]:
    return [c for c in list(server.emu.calls) if c.agent.startswith(USER_AGENT) and c.namespace == ns]


def step_metrics(step: int) -> dict[str, float]:
    return {"reward_mean": step / 10, "policy_version": step, "loss": 0.5}


def test_tracker_reports_progress_to_the_job_status(server: EmulatorThread, access: ApiAccess,
                                                    job: tuple[str, str], tmp_path: Path) -> None:
    ns, name = job
    reporter = StatusReporter(access, ns, name, clock=FakeClock())  # time stands still: one send
    tracker = Tracker(tmp_path / "run", sinks=[reporter])
    tracker.log(50, {"loss": 1.0}, phase="warm_start")  # not a progress step
    for step in (1, 2, 3):
        tracker.log(step, step_metrics(step))
    assert status_of(server, ns, name) == {"step": 1, "reward": 0.1, "policyVersion": 1}
    tracker.close()  # the final report, whatever the rate limit
    assert status_of(server, ns, name) == {"step": 3, "reward": 0.3, "policyVersion": 3}
    calls = runtime_calls(server, ns)
    assert [(c.verb, c.group, c.resource, c.subresource, c.name, c.status) for c in calls] == [
        ("patch", "nexrl.io", "nexrljobs", "status", name, 200)] * 2
    requests = [r for r in list(server.emu) if r.url.path == status_path(ns, name)]
    assert {(r.headers["Content-Type"], r.headers["Authorization"]) for r in requests} == {
        ("application/merge-patch+json", "Bearer token-1")}


def test_operator_keys_survive_the_runtime_patch(server: EmulatorThread, access: ApiAccess,
                                                  job: tuple[str, str]) -> None:
    ns, name = job
    as_operator = httpx.patch(f"{server.url}{status_path(ns, name)}", json={"status": {"phase": "Running"}},
                              headers={"Content-Type": "application/merge-patch+json"})
    assert as_operator.status_code == 200
    reporter = StatusReporter(access, ns, name)
    reporter.on_step(7, step_metrics(7))
    reporter.close()
    assert status_of(server, ns, name) == {"phase": "Running", "step": 7, "reward": 0.7, "policyVersion": 7}


def test_rate_limit_and_final_report(server: EmulatorThread, access: ApiAccess, job: tuple[str, str]) -> None:
    ns, name = job
    clock = FakeClock()
    reporter = StatusReporter(access, ns, name, interval_s=10, clock=clock)
    for step, now in enumerate([0, 3, 9.9, 10, 15], start=1):
        clock.now = now
        reporter.on_step(step, step_metrics(step))
    assert reporter.sent == 2 and status_of(server, ns, name)["step"] == 4
    reporter.close()
    assert reporter.sent == 3 and status_of(server, ns, name)["step"] == 5
    assert len(runtime_calls(server, ns)) == 3


def test_nothing_left_to_send_sends_nothing_on_close(server: EmulatorThread, access: ApiAccess,
                                                     job: tuple[str, str]) -> None:
    ns, name = job
    reporter = StatusReporter(access, ns, name, clock=FakeClock())
    reporter.on_step(1, step_metrics(1))
    reporter.close()
    assert reporter.sent == 1 and len(runtime_calls(server, ns)) == 1


def test_forbidden_is_logged_once_and_stops_reporting(server: EmulatorThread, access: ApiAccess,
                                                      job: tuple[str, str], caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    ns, name = job
    server.emu.inject(Fault("patch", "nexrljobs", namespace=ns, subresource="status", status=403,
                            reason="Forbidden", message="cannot patch resource nexrljobs/status"))
    clock = FakeClock()
    reporter = StatusReporter(access, ns, name, interval_s=1, clock=clock)
    with caplog.at_level(logging.WARNING, logger="nexrl_runtime.reporting"):
        for step in range(1, 6):
            clock.now = step * 100
            reporter.on_step(step, step_metrics(step))
        reporter.close()
    assert reporter.stopped == "HTTP 403" and reporter.sent == 0 and reporter.failures == 1
    assert [c.status for c in runtime_calls(server, ns)] == [403]
    (record,) = caplog.records
    assert "stop" in record.message and "needs `patch` on nexrljobs/status" in record.message
    assert status_of(server, ns, name) == {}


def test_a_missing_job_stops_reporting(server: EmulatorThread, access: ApiAccess,
                                       job: tuple[str, str]) -> None:
    ns, _ = job
    reporter = StatusReporter(access, ns, "gone", clock=FakeClock())
    reporter.on_step(1, step_metrics(1))
    reporter.close()
    assert reporter.stopped == "HTTP 404" and [c.status for c in runtime_calls(server, ns)] == [404]


def test_transient_errors_back_off_and_retry(server: EmulatorThread, access: ApiAccess,
                                             job: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    ns, name = job
    server.emu.inject(Fault("patch", "nexrljobs", namespace=ns, subresource="status", status=500))
    clock = FakeClock()
    reporter = StatusReporter(access, ns, name, interval_s=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="nexrl_runtime.reporting"):
        reporter.on_step(1, step_metrics(1))  # 500: back off 2 * 10 s
        clock.now = 19
        reporter.on_step(2, step_metrics(2))  # still backing off: kept for later
        clock.now = 20
        reporter.on_step(3, step_metrics(3))
    assert (reporter.failures, reporter.sent, reporter.stopped) == (1, 1, None)
    assert [c.status for c in runtime_calls(server, ns)] == [500, 200]
    assert status_of(server, ns, name)["step"] == 3 and "failed" in caplog.text
    reporter.close()


def test_an_unreachable_server_never_raises(tmp_path: Path) -> None:
    sa = service_account(tmp_path, "ns")
    access = ApiAccess("http://127.0.0.1:9", sa / "token")  # the discard port: connection refused
    clock = FakeClock()
    reporter = StatusReporter(access, "ns", "run", interval_s=1, timeout_s=2, clock=clock)
    for step in range(1, 4):
        clock.now = step * 1000
        reporter.on_step(step, step_metrics(step))
    reporter.close()
    assert (reporter.failures, reporter.sent, reporter.stopped) == (4, 0, None)


def test_in_cluster_needs_the_env_and_the_token(tmp_path: Path) -> None:
    sa = service_account(tmp_path / "sa", "team-a")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    found = ApiAccess.in_cluster(sa, env)
    assert found == ApiAccess("https://[fd00::1]:443", sa / "token", sa / "ca.crt", "team-a")
    assert ApiAccess.in_cluster(sa, {}) is None
    assert ApiAccess.in_cluster(tmp_path / "nothing", env) is None


def test_status_sinks_only_in_a_pod_for_a_named_job(tmp_path: Path) -> None:
    sa = service_account(tmp_path / "sa", "from-sa")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "9"}
    assert status_sinks(ClusterConfig(job_name="run"), tmp_path / "sa-absent", env) == []
    assert status_sinks(ClusterConfig(namespace="ns"), sa, env) == []
    (reporter,) = status_sinks(ClusterConfig(job_name="run"), sa, env)
    assert reporter.path == status_path("from-sa", "run")
    reporter.close()
    (reporter,) = status_sinks(ClusterConfig(namespace="ns", job_name="run"), sa, env, interval_s=0.5)
    assert reporter.interval_s == 0.5
    assert reporter.path == status_path("ns", "run")
    reporter.close()


def test_an_unusable_ca_means_no_reports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sa = service_account(tmp_path, "ns")
    (sa / "ca.crt").write_text("not a certificate\n")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "9"}
    with caplog.at_level(logging.WARNING, logger="nexrl_runtime.reporting"):
        assert status_sinks(ClusterConfig(job_name="run"), sa, env) == []
    assert "ca.crt" in caplog.text


def test_the_path_names_the_operators_resource() -> None:
    from nexrl_operator.api import GROUP, PLURAL, VERSION

    expected = f"/apis/{GROUP}/{VERSION}/namespaces/team-a/{PLURAL}/job-1/status"
    assert status_path("team-a", "job-1") == expected


def test_a_refused_config_reaches_the_job_and_the_operator_fails_it(access: ApiAccess, server: EmulatorThread,
                                                                    job: tuple[str, str]) -> None:
    """The seam: the runtime's refusal, as the loader words it, stored by the API and read back by the
    operator's status logic, which fails the job with ValidationFailed and does not restart it."""
    from nexrl_operator.api import NexRLJobSpec
    from nexrl_operator.job_status import Child, Observation, desired_status, should_restart

    from nexrl_runtime.config.loader import ConfigError, load_config
    from nexrl_runtime.reporting import report_config_error

    recipe = Path(__file__).resolve().parents[2] / "recipe" / "arithmetic" / "arithmetic.yaml"
    with pytest.raises(ConfigError) as refused:
        load_config(str(recipe), ["++trainer.bogus=1"])
    ns, name = job
    assert report_config_error(ClusterConfig(namespace=ns, job_name=name), str(refused.value), access)
    stored = status_of(server, ns, name)
    assert "trainer.bogus: unknown field" in stored["configError"]
    spec = NexRLJobSpec.model_validate({"recipe": "/r.yaml", "image": "img", "maxRestarts": 3})
    failed = Child(kind="RayJob", name=name, uid="r1", job_status="FAILED", deployment_status="Failed")
    obs = Observation(generation=1, status=stored, now="2026-01-01T00:00:00Z", spec=spec,
                      children={"rayjob": failed})
    status = desired_status(obs)
    assert status["phase"] == "Failed"
    assert status["message"] == f"the runtime refused the config: {refused.value}"
    assert not should_restart(obs)
    assert not report_config_error(ClusterConfig(namespace=ns), "x", access)  # no job named: nothing sent
