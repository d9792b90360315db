"""ThreadedServer: a FastAPI app on a loopback port in a background uvicorn thread, for tests that
talk real HTTP (the training service, the fake OpenAI-compatible server); a context manager."""

from __future__ import annotations

import threading
import time

from fastapi import FastAPI

from nexrl_runtime.trainer_service.server import bind, uvicorn_server


class ThreadedServer:
    """The app on a loopback port in a background thread; a context manager."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = uvicorn_server(app)
        self.sock = bind(host, port)
        host, port = self.sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="test-http-server", daemon=True
        )

    def start(self, timeout: float = 30.0) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:  # uvicorn exposes a flag, not an event
            if not self.thread.is_alive():
                raise RuntimeError("the server thread exited before it started")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()
        if self.thread.is_alive():
            raise TimeoutError(f"the training service thread did not stop within {timeout} s")

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
