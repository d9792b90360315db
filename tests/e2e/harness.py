"""Test plumbing: the emulator on a background event loop, a kubeconfig for it, ``wait_for``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import pathlib
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import kmock
import kubernetes
import yaml
from apiserver import ApiServer

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


class EmulatorThread:
    """Runs :class:`ApiServer` on 127.0.0.1 in a thread, so that sync tests and clients can use it."""

    def __init__(self, **options: Any) -> None:
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
        self._served.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        self._stop = asyncio.Event()
        async with ApiServer(**self._options) as emu, kmock.Server(emu) as server:
            self.emu, self.url = emu, str(server.url).rstrip("/")
            ready.set_result(None)
            await self._stop.wait()

    def run(self, factory: Callable[[], Coroutine[Any, Any, T] | Awaitable[T]], timeout: float = 10) -> T:
        """Run a coroutine on the emulator's loop (e.g. ``emu.apply``) and return its result."""
        async def call() -> T:
            return await factory()
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    def write_kubeconfig(self, path: pathlib.Path) -> pathlib.Path:
        """A kubeconfig that points kopf and the kubernetes client at the emulator (no auth)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester",
                                                          "namespace": "default"}}],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def api_client(self) -> kubernetes.client.ApiClient:
        """A real kubernetes client over HTTP to the emulator."""
        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        return kubernetes.client.ApiClient(configuration)
