"""Two inference replicas for the HTTP-inference tests on Ray: fake OpenAI-compatible servers at
127.0.0.2 and 127.0.0.3 on one port, which one Service name resolves to (a headless Service's two
pods); `pods` fixture (tests/distributed/conftest.py) starts them and points discovery's resolver at them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fake_openai_server import LocalServerState, create_app
from threaded_server import ThreadedServer

from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.inference import LocalEngine, discovery
from nexrl_runtime.models import build_policy
from tests.distributed.conftest import ray_config

ADDRESSES = ["127.0.0.2", "127.0.0.3"]
SERVICE = "job-inference.team-a.svc"


@dataclass
class Pods:
    """The two replicas: their states, servers, the shared port and the service URL."""

    cfg: NexRLConfig
    states: list[LocalServerState]
    servers: list[ThreadedServer]
    port: int

    def start(self, i: int, seed: int) -> None:
        """(Re)start replica `i` with fresh weights, as a restarted pod loads its model path."""
        torch.manual_seed(seed)
        model, tok = build_policy(self.cfg.model)
        self.states[i] = LocalServerState(LocalEngine(model, tok.pad_token_id, tok.eos_token_id, seed))
        app = create_app(self.states[i])
        self.servers[i] = ThreadedServer(app, host=ADDRESSES[i], port=self.port).start()

    def completions(self, i: int) -> int:
        return sum(p == "/v1/completions" for _, p, _ in self.states[i].requests)


def http_config(tmp_path: Path, port: int, *overrides: str) -> NexRLConfig:
    return ray_config(tmp_path, [
        "total_steps=6", "inference.engine=openai", "inference.served_model_name=policy",
        f"cluster.inference.base_urls=[http://{SERVICE}:{port}]", "cluster.inference.replicas=2",
        "cluster.rollout_workers=2", "rollout.num_workers=1", "inference.refresh_s=0.2",
        "weight_sync.mode=batch-async", "weight_sync.staleness=1", *overrides,
    ])  # fmt: skip


def running_pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pods]:
    """Both replicas up (torn down after the yield), and the Service name resolving to them."""
    monkeypatch.setattr(discovery, "resolve_all", lambda host: list(ADDRESSES) if host == SERVICE else [])
    probe = socket.create_server((ADDRESSES[0], 0))
    port = probe.getsockname()[1]
    probe.close()
    cfg = http_config(tmp_path, port)
    p = Pods(cfg, [None, None], [None, None], port)  # type: ignore[list-item]
    for i in range(2):
        p.start(i, seed=10 + i)
    yield p
    for server in p.servers:
        if server.thread.is_alive():
            server.stop()
