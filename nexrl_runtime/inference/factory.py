"""Build the rollout engine a config asks for (`inference.engine`): the controller's one entry point."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import InferenceConfig, NexRLConfig
from nexrl_runtime.inference.base import InferenceEngine
from nexrl_runtime.inference.local import LocalEngine
from nexrl_runtime.inference.openai_client import OpenAIEngine, WeightPusher
from nexrl_runtime.inference.vllm_server import VLLMServer, build_spec, free_port
from nexrl_runtime.inference.vllm_weights import DiskWeightPusher, NcclWeightPusher


def build_engine(
    config: NexRLConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> InferenceEngine:
    """The one engine of the rollout workers (an OpenAI engine balances all its replicas itself).
    `engine: vllm` starts the servers here; the engine's close() stops them."""
    inf = config.inference
    if inf.engine == "local":
        return LocalEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id, config.seed)
    if inf.engine == "openai":
        urls = inf.base_urls or config.cluster.inference.base_urls
        if not urls:
            raise ConfigError(
                "inference.base_urls: inference.engine=openai needs the servers' URLs here "
                "(or in cluster.inference.base_urls)"
            )
        return openai_engine(config, urls)
    servers = start_vllm(config)
    try:
        engine = openai_engine(config, [s.base_url for s in servers])
    except BaseException:
        for s in servers:
            s.stop()
        raise
    for s in servers:
        engine.on_close(s.stop)
    return engine


def openai_engine(config: NexRLConfig, urls: list[str]) -> OpenAIEngine:
    """A client of the replicas at `urls` that also pushes weights to them."""
    inf = config.inference
    return client_engine(inf, urls, weight_pusher(inf, urls, Path(config.output_dir)))


def client_engine(inf: InferenceConfig, urls: list[str], pusher: WeightPusher | None = None) -> OpenAIEngine:
    """A client of the replicas at `urls` (pushing weights only through `pusher`)."""
    return OpenAIEngine(
        urls,
        model=inf.served_model_name,
        timeout_s=inf.timeout_s,
        max_retries=inf.max_retries,
        balance=inf.balance,
        pusher=pusher,
    )


def weight_pusher(inf: InferenceConfig, urls: list[str], output_dir: Path) -> WeightPusher | None:
    if inf.weight_sync == "disk":
        return DiskWeightPusher(urls, inf.weights_dir or output_dir / "weights", inf.timeout_s)
    if inf.weight_sync == "nccl":
        if not inf.nccl_master:
            raise ConfigError("inference.nccl_master: inference.weight_sync=nccl needs it ('host:port')")
        return NcclWeightPusher(urls, inf.nccl_master, inf.timeout_s)
    return None


def start_vllm(config: NexRLConfig) -> list[VLLMServer]:
    """Launch `inference.replicas` servers of `model.path` at once, then wait for all to be healthy."""
    inf, srv = config.inference, config.inference.server
    if config.model.kind != "hf" or not config.model.path:
        raise ConfigError("model.path: inference.engine=vllm serves an HF folder: set model.kind=hf and "
                          "model.path")
    model_path = str(Path(config.model.path).resolve())
    name = inf.served_model_name or "policy"
    extra = ["--weight-transfer-config", '{"backend": "nccl"}'] if inf.weight_sync == "nccl" else []
    log_dir = Path(config.output_dir) / "vllm"
    servers = []
    try:
        for i in range(inf.replicas):
            port = srv.port + i if srv.port else free_port(srv.host)
            cfg = srv.model_copy(update={"extra_args": [*srv.extra_args, *extra]})
            spec = build_spec(model_path, cfg, port, name)
            servers.append(VLLMServer(spec, log_dir / f"server-{i}.log", srv.startup_timeout_s).launch())
        for server in servers:
            server.wait()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
