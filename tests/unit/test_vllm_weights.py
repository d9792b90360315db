"""The NCCL weight route's request sequence (against local servers, with an in-process data plane
standing in for NCCL), the vLLM launcher's process handling, and build_engine's choices."""

from __future__ import annotations

import queue
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from fake_openai_server import LocalServerState, Receiver, create_app
from threaded_server import ThreadedServer

from nexrl_runtime.config.schema import NexRLConfig, VLLMServerConfig
from nexrl_runtime.inference import LocalEngine, OpenAIEngine, build_engine
from nexrl_runtime.inference.vllm_server import ServerSpec, VLLMServer, build_spec, free_port
from nexrl_runtime.inference.vllm_weights import DiskWeightPusher, NcclWeightPusher
from nexrl_runtime.models import build_policy
from tests.unit.test_openai_client import GREEDY, paths, prompts, tiny_engine


class QueuePlane:
    """The trainer's rank 0 as queues: every receiver gets its own copy of each broadcast tensor."""

    def __init__(self) -> None:
        self.queues: list[queue.Queue[torch.Tensor]] = []
        self.opened: tuple[str, int, int] | None = None
        self.closed = False

    def receiver(self) -> Receiver:
        q: queue.Queue[torch.Tensor] = queue.Queue()
        self.queues.append(q)

        def receive(names: list[str], dtypes: list[str], shapes: list[list[int]]) -> list[torch.Tensor]:
            got = [q.get(timeout=30) for _ in names]
            assert [str(t.dtype).removeprefix("torch.") for t in got] == dtypes
            assert [list(t.shape) for t in got] == shapes
            return got

        return receive

    def open(self, master_address: str, master_port: int, world_size: int) -> None:
        self.opened = (master_address, master_port, world_size)

    def broadcast(self, tensors: Iterable[torch.Tensor]) -> None:
        for t in tensors:
            for q in self.queues:
                q.put(t.clone())

    def close(self) -> None:
        self.closed = True


def test_nccl_route_request_sequence_and_weights_land() -> None:
    plane = QueuePlane()
    states = [LocalServerState(tiny_engine(0)[0], receiver=plane.receiver()) for _ in range(2)]
    servers = [ThreadedServer(create_app(s)).start() for s in states]
    other, tok = tiny_engine(1)
    pusher = NcclWeightPusher([s.url for s in servers], "10.0.0.7:29500", plane=plane)
    engine = OpenAIEngine([s.url for s in servers], model="policy", pusher=pusher)
    try:
        engine.load_weights(other.model.state_dict(), version=3)
        assert plane.opened == ("10.0.0.7", 29500, 3)  # rank 0 + one rank per replica
        sequence = [
            "/get_world_size", "/init_weight_transfer_engine", "/pause", "/start_weight_update",
            "/update_weights", "/finish_weight_update", "/resume",
        ]  # fmt: skip
        for rank, state in enumerate(states, start=1):
            assert paths(state) == sequence
            body = {p: b for _, p, b in state.requests}
            assert body["/init_weight_transfer_engine"] == {"init_info": {
                "master_address": "10.0.0.7", "master_port": 29500, "rank_offset": rank,
                "world_size": 3, "packed": False,
            }}  # fmt: skip
            info = body["/update_weights"]["update_info"]
            assert info["names"] == list(other.model.state_dict())
            assert body["/finish_weight_update"] == {"weight_version": "3"}
            assert state.weight_version == "3"
        out = engine.generate(prompts(tok), GREEDY)  # both replicas now serve the pushed weights
        assert [g[0].token_ids for g in out] == [g[0].token_ids for g in other.generate(prompts(tok), GREEDY)]
        assert {c.policy_version for g in out for c in g} == {3}
        engine.load_weights(other.model.state_dict(), version=4)  # connected once, pushed twice
        assert paths(states[0]).count("/init_weight_transfer_engine") == 1
    finally:
        engine.close()
        for s in servers:
            s.stop()
    assert plane.closed and all(paths(s)[-1] == "/shutdown_weight_transfer_engine" for s in states)


def test_nccl_master_must_be_host_port() -> None:
    with pytest.raises(ValueError, match="host:port"):
        NcclWeightPusher(["http://x"], "no-port")


def test_build_spec_from_config() -> None:
    cfg = VLLMServerConfig(
        tensor_parallel_size=2, max_model_len=1024, gpu_memory_utilization=0.5, dtype="float32",
        extra_args=["-O0"], env={"VLLM_CPU_KVCACHE_SPACE": "1"},
    )  # fmt: skip
    spec = build_spec("/models/m", cfg, 8123, "policy")
    argv = spec.argv
    assert argv[:5] == [sys.executable, "-m", "nexrl_runtime.inference.vllm_server", "serve", "/models/m"]
    pairs = dict(zip(argv[5::2], argv[6::2], strict=False))
    assert pairs["--tensor-parallel-size"] == "2" and pairs["--max-model-len"] == "1024"
    assert pairs["--gpu-memory-utilization"] == "0.5" and pairs["--dtype"] == "float32"
    assert pairs["--served-model-name"] == "policy" and pairs["--port"] == "8123"
    assert argv[-1] == "-O0"
    assert spec.env == {"VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    assert spec.base_url == "http://127.0.0.1:8123"


def python_spec(code: str, port: int) -> ServerSpec:
    return ServerSpec([sys.executable, "-c", code], {}, f"http://127.0.0.1:{port}")


def test_server_process_start_fail_and_stop(tmp_path: Path) -> None:
    crash = VLLMServer(python_spec("print('boom'); raise SystemExit(3)", free_port()), tmp_path / "a.log")
    with pytest.raises(RuntimeError, match=r"(?s)code 3.*boom"):
        crash.start()
    hang = VLLMServer(python_spec("import time; time.sleep(120)", free_port()), tmp_path / "b.log", 1.0)
    with pytest.raises(TimeoutError, match="/health"):
        hang.start()
    assert hang.proc is None  # stopped after the failed start
    port = free_port()
    health = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self): self.send_response(200); self.end_headers()\n"
        f"h.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    with VLLMServer(python_spec(health, port), tmp_path / "c.log", 30.0) as ok:
        proc = ok.proc
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None  # stopped by the context manager


def config(tmp_path: Path, **inference: object) -> NexRLConfig:
    return NexRLConfig.model_validate({
        "data": {"path": "d.jsonl"}, "rollout": {"evaluator": "e.py:E"}, "output_dir": str(tmp_path),
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}, "inference": inference,
    })  # fmt: skip


def test_build_engine_choices(tmp_path: Path) -> None:
    model, tok = build_policy(config(tmp_path).model)
    local = build_engine(config(tmp_path), model, tok)
    assert isinstance(local, LocalEngine)
    with pytest.raises(ValueError, match="base_urls"):
        build_engine(config(tmp_path, engine="openai"), model, tok)
    with pytest.raises(ValueError, match="nccl_master"):
        build_engine(
            config(tmp_path, engine="openai", base_urls=["http://x"], weight_sync="nccl"), model, tok
        )
    with pytest.raises(ValueError, match=r"model\.kind=hf"):
        build_engine(config(tmp_path, engine="vllm"), model, tok)
    cfg = config(tmp_path, engine="openai")
    cfg.cluster.inference.base_urls = ["http://a:8000", "http://b:8000"]  # written by the operator
    remote = build_engine(cfg, model, tok)
    try:
        assert isinstance(remote, OpenAIEngine) and isinstance(remote.pusher, DiskWeightPusher)
        assert [r.url for r in remote.replicas] == cfg.cluster.inference.base_urls
        assert remote.pusher.weights_dir == (tmp_path / "weights").resolve()
    finally:
        remote.close()
    frozen = build_engine(
        config(tmp_path, engine="openai", base_urls=["http://a"], weight_sync="none"), model, tok
    )
    try:
        with pytest.raises(RuntimeError, match="weight_sync: none"):
            frozen.load_weights(model.state_dict(), 1)
    finally:
        frozen.close()
