"""Test plumbing: the emulator on a background event loop, a kubeconfig for it, ``wait_for``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp.test_utils
import kmock
import kubernetes
import yaml
from apiserver import ApiServer

REPO = pathlib.Path(__file__).resolve().parents[2]
NEXRL_CRD = REPO / "crds" / "nexrl.io_nexrljobs.yaml"
NEXRL_CRDS = sorted((REPO / "crds").glob("*.yaml"))

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # e.g. a 404 while the object is not there yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last: {last_error!r}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it), for a server a test starts next."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class EmulatorThread:
    """Runs :class:`ApiServer` in a thread, so that sync tests and clients can use it.

    ``host`` is the address to listen on (127.0.0.1, or e.g. a bridge IP that pods in network
    namespaces reach); ``port`` 0 picks a free one; ``tls`` (PEM paths ``ca``, ``cert``, ``key``)
    serves HTTPS, as a real API server does; the other options go to :class:`ApiServer`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: Any = None, stop_timeout: float = 10,
                 **options: Any) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.stop_timeout = stop_timeout
        """how long a stop may wait for open requests (a watch whose client vanished ends when aiohttp's
        shutdown timeout, 60 s, cancels it)"""
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="apiserver", daemon=True)
        self._stop: asyncio.Event | None = None
        self._served: concurrent.futures.Future[None] | None = None
        self.emu: ApiServer
        self.url = ""

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._served = asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop)
        ready.result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None and self._served is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._served.result(timeout=self.stop_timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        self._stop = asyncio.Event()
        extra: dict[str, Any] = {"server_cls": _tls_server(self.tls)} if self.tls else {}
        async with ApiServer(**self._options) as emu, \
                kmock.Server(emu, host=self.host, port=self.port or None, **extra) as server:
            self.emu, self.url = emu, str(server.url).rstrip("/")
            ready.set_result(None)
            await self._stop.wait()

    def run(self, factory: Callable[[], Coroutine[Any, Any, T] | Awaitable[T]], timeout: float = 10) -> T:
        """Run a coroutine on the emulator's loop (e.g. ``emu.apply``) and return its result."""
        async def call() -> T:
            return await factory()
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    def write_kubeconfig(self, path: pathlib.Path) -> pathlib.Path:
        """A kubeconfig that points kopf and the kubernetes client at the emulator (no auth; TLS: its CA)."""
        cluster: dict[str, Any] = {"server": self.url}
        user: dict[str, Any] = {}
        if self.tls:  # over HTTPS, kubectl prompts for a username unless the user has credentials
            cluster["certificate-authority"] = str(self.tls.ca)
            user["token"] = "emulator-admin"
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": cluster}],
            "users": [{"name": "tester", "user": user}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester",
                                                          "namespace": "default"}}],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def kubectl(self, workdir: pathlib.Path) -> Kubectl:
        """The real kubectl pointed at the emulator, with its own kubeconfig and discovery cache."""
        return Kubectl(self.write_kubeconfig(workdir / "kubeconfig.yaml"), workdir / "kubectl-cache")

    def api_client(self) -> kubernetes.client.ApiClient:
        """A real kubernetes client over HTTP to the emulator."""
        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        if self.tls:
            configuration.ssl_ca_cert = str(self.tls.ca)
        return kubernetes.client.ApiClient(configuration)

    def live(self, group: str, version: str, plural: str) -> list[dict[str, Any]]:
        """A consistent snapshot of the live objects of a resource (taken on the server's loop)."""
        async def snapshot() -> list[dict[str, Any]]:
            return self.emu.live(group, version, plural)
        return self.run(snapshot)

    def install_crd(self, path: pathlib.Path = NEXRL_CRD) -> None:
        """Create a CustomResourceDefinition from a YAML file (as `kubectl apply -f crds/` would)."""
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self.run(lambda: self.emu.apply("apiextensions.k8s.io", "v1", "customresourcedefinitions", crd))

    def install_crds(self) -> None:
        """Create every CRD in crds/ (NexRLJob, NexRLQuota)."""
        for path in NEXRL_CRDS:
            self.install_crd(path)

    def writes(self, group: str, version: str, plural: str) -> list[tuple[int, str, dict[str, Any]]]:
        """Every state the server stored for a resource, in order: (resourceVersion, event type, object),
        as its watch log keeps them (``watch_cache_size`` deep): what was written, not only the last state."""
        async def snapshot() -> list[tuple[int, str, dict[str, Any]]]:
            log = self.emu._logs.get(self.emu._res(group, version, plural), ())
            return [(rv, event["type"], copy.deepcopy(event["object"])) for rv, event in log]
        return self.run(snapshot)

    def watches(self, plural: str) -> int:
        """How many watch requests for a resource the server has seen (a restarted operator adds one)."""
        return sum(1 for call in list(self.emu.calls) if call.verb == "watch" and call.resource == plural)


def _tls_server(tls: Any) -> type[aiohttp.test_utils.RawTestServer]:
    """kmock's server class, started with a TLS context from ``tls.cert`` and ``tls.key``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert), str(tls.key))

    class TLSServer(aiohttp.test_utils.RawTestServer):
        async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
            await super().start_server(loop=loop, ssl=context, **kwargs)

    return TLSServer


class Kubectl:
    """Runs the real kubectl binary against one kubeconfig, with a private discovery/OpenAPI cache
    (so that a cache from an earlier emulator on the same port is never read)."""

    def __init__(self, kubeconfig: pathlib.Path, cache_dir: pathlib.Path) -> None:
        binary = shutil.which("kubectl")
        if binary is None:
            raise AssertionError("kubectl is not on PATH: the kubectl tests need the real binary")
        self.binary, self.kubeconfig, self.cache_dir = binary, kubeconfig, cache_dir

    def command(self, *args: str) -> list[str]:
        return [self.binary, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}", *args]

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl <args>``; with ``check``, a non-zero exit fails with its stderr."""
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "KUBECONFIG": str(self.kubeconfig)})
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done


class OperatorProcess:
    """The real operator (`python -m nexrl_operator.main`) in a subprocess, pointed at the emulator."""

    def __init__(self, server: EmulatorThread, workdir: pathlib.Path, *args: str) -> None:
        self.server, self.args = server, args
        self.kubeconfig = server.write_kubeconfig(workdir / "kubeconfig.yaml")
        self.log_path = workdir / "operator.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.liveness = ""

    def start(self, timeout: float = 30) -> OperatorProcess:
        """Start it and wait until it watches NexRLJobs (a fresh watch request, so restarts count too)."""
        before = self.server.watches("nexrljobs")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "nexrl_operator.main", *self.args],
                                         env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        wait_for(lambda: self.server.watches("nexrljobs") > before or self.proc.poll() is not None,
                 timeout, what="the operator to watch nexrljobs")
        if self.proc.poll() is not None:
            raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{self.log()}")
        return self

    def stop(self, kill: bool = False) -> None:
        """SIGTERM and wait (a clean stop), or SIGKILL (a crash)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def rss_mb(self, peak: bool = False) -> float:
        """Resident memory of the operator process (VmHWM with ``peak``), from /proc."""
        assert self.proc is not None
        field = "VmHWM" if peak else "VmRSS"
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field} for pid {self.proc.pid}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
