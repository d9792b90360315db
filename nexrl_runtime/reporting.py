"""Progress reports on the job's NexRLJob (`status.step`, `reward`, `policyVersion`), so that
`kubectl get nexrljobs` shows them. In a pod only, with its service account; best effort.

Plain httpx, no Kubernetes client: the runtime does not depend on kubernetes or kopf. The body
and path come from nexrl_runtime.contract, which the operator imports too. See docs/operator-runtime.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nexrl_runtime.contract import MERGE_PATCH, ClusterConfig, config_error_patch, progress_patch, status_path

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
USER_AGENT = "nexrl-runtime"
RETRYABLE = frozenset({401, 408, 409, 429})
"""4xx answers worth retrying (token rotation, timeouts, conflicts, throttling); any other 4xx
means the request itself is refused (403 RBAC, 404 no such job, 422 schema): reporting stops."""


@dataclass(frozen=True)
class ApiAccess:
    """How to reach the API server as the pod's service account."""

    url: str
    token_file: Path
    ca_file: Path | None = None
    namespace: str | None = None

    @classmethod
    def in_cluster(cls, sa_dir: Path = SA_DIR, environ: Mapping[str, str] = os.environ) -> ApiAccess | None:
        """From KUBERNETES_SERVICE_HOST/PORT and the mounted token; None outside a pod."""
        host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
        token, ca, ns = sa_dir / "token", sa_dir / "ca.crt", sa_dir / "namespace"
        if not host or not port or not token.is_file():
            return None
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        namespace = ns.read_text().strip() if ns.is_file() else None
        return cls(f"https://{host}:{port}", token, ca if ca.is_file() else None, namespace or None)

    def verify(self) -> ssl.SSLContext | bool:
        """TLS verification against the cluster's CA (the system CAs when there is none)."""
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True


class StatusReporter:
    """A Tracker sink: merge-patches the latest step's progress at most every `interval_s` (longer
    after failures), and the last one on close(). Never raises for the API's sake."""

    def __init__(self, access: ApiAccess, namespace: str, name: str, *, interval_s: float = 10.0,
                 timeout_s: float = 5.0, max_backoff_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.access, self.path = access, status_path(namespace, name)
        self.interval_s, self.max_backoff_s, self._clock = interval_s, max_backoff_s, clock
        verify = access.verify() if access.url.startswith("https://") else False
        self._client = httpx.Client(base_url=access.url, verify=verify, timeout=timeout_s,
                                    headers={"Content-Type": MERGE_PATCH, "User-Agent": USER_AGENT})
        self.sent = self.failures = 0
        self.stopped: str | None = None
        """why reporting stopped for good (a refused request), else None"""
        self._streak = 0
        self._next_at = -math.inf
        self._pending: dict[str, Any] | None = None

    def on_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Remember this step's progress; send it when the rate limit allows."""
        if self.stopped:
            return
        self._pending = progress_patch(step, metrics.get("reward_mean"), metrics.get("policy_version"))
        if self._clock() >= self._next_at:
            self._send()

    def send_last(self, body: dict[str, Any]) -> None:
        """Send this body now, once, and close (a last word, such as a refused config)."""
        self._pending = body
        self.close()

    def close(self) -> None:
        """Send the latest progress not sent yet, whatever the rate limit, then close the client."""
        if self._pending is not None and not self.stopped:
            self._send()
        self._client.close()

    def _send(self) -> None:
        body, self._pending = self._pending, None
        try:
            token = self.access.token_file.read_text().strip()  # re-read: kubelet rotates it
            response = self._client.patch(self.path, content=json.dumps(body),
                                          headers={"Authorization": f"Bearer {token}"})
        except (httpx.HTTPError, OSError) as err:
            self._failed(body, f"{type(err).__name__}: {err}")
            return
        if response.is_success:
            self.sent, self._streak = self.sent + 1, 0
            self._next_at = self._clock() + self.interval_s
        elif 400 <= response.status_code < 500 and response.status_code not in RETRYABLE:
            self._stop(response)
        else:
            self._failed(body, f"HTTP {response.status_code}: {response.text[:200]}")

    def _failed(self, body: dict[str, Any] | None, why: str) -> None:
        """A transient failure: keep the body for later (unless a newer one comes), back off."""
        self.failures, self._streak = self.failures + 1, self._streak + 1
        delay = min(self.interval_s * 2**self._streak, self.max_backoff_s)
        self._next_at = self._clock() + delay
        self._pending = body
        log.warning("progress report to %s failed (%s); next try in %.0f s, training goes on",
                    self.path, why, delay)

    def _stop(self, response: httpx.Response) -> None:
        """A refused request (see RETRYABLE): say why once, then report no more in this run."""
        self.failures += 1
        self.stopped = f"HTTP {response.status_code}"
        hint = {403: "the pod's service account needs `patch` on nexrljobs/status in this namespace",
                404: "no such NexRLJob (deleted?) or its CRD is not installed"}
        log.warning("progress reports to %s stop for this run: HTTP %d (%s): %s", self.path,
                    response.status_code, hint.get(response.status_code, "the request is refused"),
                    response.text[:200])


def status_sinks(cluster: ClusterConfig, sa_dir: Path = SA_DIR, environ: Mapping[str, str] = os.environ,
                 interval_s: float = 10.0) -> list[StatusReporter]:
    """A reporter when running in a pod for a job the cluster section names, else none."""
    access = ApiAccess.in_cluster(sa_dir, environ)
    namespace = cluster.namespace or (access.namespace if access else None)
    if access is None or not cluster.job_name or not namespace:
        return []
    try:
        reporter = StatusReporter(access, namespace, cluster.job_name, interval_s=interval_s)
    except (ssl.SSLError, OSError) as err:  # an unreadable ca.crt: run without progress reports
        log.warning("no progress reports on the NexRLJob: cannot use %s: %s", access.ca_file, err)
        return []
    log.info("reporting progress to %s", reporter.path)
    return [reporter]


def report_config_error(cluster: ClusterConfig, message: str, access: ApiAccess | None) -> bool:
    """Tell the operator that this pod's run refused its config (``status.configError``), so the job
    fails with ValidationFailed instead of being restarted with the same config. Best effort: True
    when the patch was accepted; outside a pod (``access`` None) or without a job name, nothing."""
    namespace = cluster.namespace or (access.namespace if access else None)
    if access is None or not cluster.job_name or not namespace:
        return False
    reporter = StatusReporter(access, namespace, cluster.job_name)
    reporter.send_last(config_error_patch(message))
    return reporter.sent == 1
