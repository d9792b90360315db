"""Replica discovery: the inference servers behind the configured URLs, found the way a cluster
publishes them (a headless Service's DNS name resolves to every ready pod), kept current.

`expand` turns each base URL into one URL per address its host resolves to (pure, with an
injectable resolver). `ReplicaKeeper` re-resolves and probes them (`/health`, `/weight_info`): a
replica is *serving* once it reports the current weight version; a new or restarted one that
reports another version is caught up (re-pushed) first, so no rollout reaches stale weights.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from nexrl_runtime.config.errors import ConfigError

log = logging.getLogger(__name__)

Resolver = Callable[[str], list[str]]
"""host name -> its addresses, in the resolver's order (empty when it resolves to nothing)."""


def resolve_all(host: str) -> list[str]:
    """Every address `host` resolves to (IPv4 and IPv6), deduplicated in order; [] if unknown."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def with_host(url: str, address: str) -> str:
    """`url` with its host replaced by `address` (bracketed when IPv6), port and path kept."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")


def expand(urls: Sequence[str], resolver: Resolver = resolve_all) -> list[str]:
    """One URL per replica: a name that resolves to N addresses gives N URLs; an IP stays one."""
    out: list[str] = []
    for url in urls:
        host = urlsplit(url).hostname
        if not host:
            raise ConfigError(
                f"inference.base_urls: {url!r} has no host name (expected e.g. http://job-inference:8000)"
            )
        if _is_ip(host):
            out.append(url.rstrip("/"))
        else:
            out += [with_host(url, address) for address in resolver(host)]
    return list(dict.fromkeys(out))


def is_current(label: str | None, version: int, pushed: bool) -> bool:
    """Whether a replica reporting weight-version `label` serves policy `version`. Before any push
    every replica serves the initial weights from its model path."""
    return not pushed or label == str(version)


CatchUp = Callable[[str, int], None]
"""(replica URL, version): load the current weights into that replica and label it."""


class ReplicaKeeper:
    """The driver's view of the replicas: which exist (DNS), which are healthy, which serve the
    current version. `refresh()` is one round; `start()` runs rounds on a thread every
    `interval_s`. Thread-safe: pushes and rounds are serialised by `lock`."""

    def __init__(self, urls: Sequence[str], resolver: Resolver | None = None,
                 probe_timeout_s: float = 5.0) -> None:
        if not urls:
            raise ValueError("no inference URLs to discover replicas from")
        self.urls = list(urls)
        self.resolver: Resolver = resolver or (lambda host: resolve_all(host))  # looked up per call
        self.http = httpx.Client(timeout=probe_timeout_s)
        self.lock = threading.RLock()
        self.version = 0
        self.pushed = False
        self.catch_up: CatchUp | None = None
        self.healthy: list[str] = []
        self.serving: list[str] = []
        self.caught_up = 0
        self.silent = 0  # /weight_info probes that got no answer in time
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- probes -----------------------------------------------------------------------------------
    def _get(self, url: str, path: str) -> httpx.Response | None:
        try:
            return self.http.get(f"{url}{path}")
        except httpx.TransportError:
            return None

    def _healthy(self, url: str) -> bool:
        resp = self._get(url, "/health")
        return resp is not None and resp.status_code == 200

    def label(self, url: str) -> str | None:
        """The weight version `url` reports (vLLM dev mode's /weight_info), None if it does not say
        or does not answer."""
        try:
            return self._label(url)
        except httpx.TransportError:
            return None

    def _label(self, url: str) -> str | None:
        """As `label`, but a replica that does not answer in time raises (httpx.TransportError)."""
        resp = self.http.get(f"{url}/weight_info")
        return str(resp.json().get("weight_version")) if resp.status_code == 200 else None

    def world_size(self, url: str) -> int:
        """The GPUs one replica spans (tensor x pipeline parallel), from vLLM dev mode's route."""
        resp = self.http.get(f"{url}/get_world_size", params={"include_dp": "false"})
        resp.raise_for_status()
        return int(resp.json()["world_size"])

    # -- rounds -----------------------------------------------------------------------------------
    def probe(self) -> list[str]:
        """Re-resolve and return the replicas that answer /health now."""
        with self.lock:
            self.healthy = [u for u in expand(self.urls, self.resolver) if self._healthy(u)]
            return list(self.healthy)

    def refresh(self) -> list[str]:
        """Re-resolve, probe, catch up the replicas that are behind; returns the serving ones. A
        replica that cannot be caught up stays out (and is tried again next round)."""
        with self.lock:
            serving = []
            for url in self.probe():
                try:
                    label = self._label(url)
                except httpx.TransportError:
                    # healthy but too busy to say (a vLLM on a loaded CPU): not a restart, which would
                    # have failed /health since the last round; it keeps the standing it had
                    self.silent += 1
                    if url in self.serving:
                        serving.append(url)
                    continue
                if is_current(label, self.version, self.pushed):  # a restart reports another
                    serving.append(url)
                    continue
                if self.catch_up is None:
                    continue
                log.info("inference replica %s is behind version %d: pushing it", url, self.version)
                try:
                    self.catch_up(url, self.version)
                except Exception:
                    log.exception("could not catch up inference replica %s", url)
                    continue
                self.caught_up += 1
                serving.append(url)
            self.serving = serving
            return list(serving)

    def wait_for(self, count: int, timeout_s: float) -> list[str]:
        """Refresh until `count` replicas (at least one when `count` is 0) are serving."""
        want = max(count, 1)
        deadline = time.monotonic() + timeout_s
        while True:
            serving = self.refresh()
            if len(serving) >= want:
                return serving
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{len(serving)} of {want} inference replicas ready behind {self.urls} after "
                    f"{timeout_s:.0f} s (addresses found: {expand(self.urls, self.resolver)})"
                )
            self._stop.wait(0.5)

    def pushed_to(self, urls: Sequence[str], version: int) -> None:
        """Record a push of `version` that reached exactly `urls`: only they serve it now."""
        with self.lock:
            self.version, self.pushed = version, True
            self.serving = [u for u in urls if u in self.healthy]

    def current(self) -> list[str]:
        """The replicas serving the current version; re-raises a failed background catch-up."""
        with self.lock:
            if self.error is not None:
                raise RuntimeError(f"inference replica refresh failed: {self.error}") from self.error
            return list(self.serving)

    # -- background -------------------------------------------------------------------------------
    def start(self, interval_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.refresh()
                except Exception as err:  # kept for the caller: a failed catch-up must not pass silently
                    log.exception("inference replica refresh failed")
                    self.error = err

        self._thread = threading.Thread(target=loop, name="replica-keeper", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.http.close()
