"""`nexrl serve-trainer`: the TrainerService behind a FastAPI app on uvicorn.

Malformed bodies are 422 (pydantic says which field and why); requests the service refuses are
400/404/409 with the reason in `detail`. Every route is a plain `def`, run in uvicorn's threadpool;
the service's lock orders them.
"""

from __future__ import annotations

import os
import random
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.models.factory import build_policy, resolve_device
from nexrl_runtime.registry import resolve_class
from nexrl_runtime.trainer import TRAINERS, Trainer
from nexrl_runtime.trainer.fsdp import RankGroup
from nexrl_runtime.trainer_service.api import (
    ForwardBackwardRequest,
    ForwardBackwardResponse,
    Health,
    LoadedResponse,
    LogprobsRequest,
    LogprobsResponse,
    NameRequest,
    OptimStepResponse,
    SavedResponse,
)
from nexrl_runtime.trainer_service.ranks import RankLeader, follow
from nexrl_runtime.trainer_service.service import ServiceError, TrainerService

SAFETENSORS_MEDIA_TYPE = "application/octet-stream"
STEP_HEADER = "x-nexrl-step"


def create_app(service: TrainerService) -> FastAPI:
    """The HTTP routes over `service`."""
    app = FastAPI(title="NexRL training service")

    @app.exception_handler(ServiceError)
    def _refused(_: Request, err: ServiceError) -> JSONResponse:
        return JSONResponse(status_code=err.status, content={"detail": str(err)})

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each bad input: a NaN there cannot be JSON (a 500), and a
        # whole batch of datums is no help. Where and why is enough.
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in err.errors()]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.get("/health")
    def health() -> Health:
        return service.health()

    @app.post("/forward_backward")
    def forward_backward(req: ForwardBackwardRequest) -> ForwardBackwardResponse:
        return service.forward_backward(req)

    @app.post("/optim_step")
    def optim_step() -> OptimStepResponse:
        return service.optim_step()

    @app.post("/compute_logprobs")
    def compute_logprobs(req: LogprobsRequest) -> LogprobsResponse:
        return service.compute_logprobs(req)

    @app.get("/weights")
    def get_weights() -> Response:
        data, step = service.weights_bytes()
        return Response(data, media_type=SAFETENSORS_MEDIA_TYPE, headers={STEP_HEADER: str(step)})

    @app.put("/weights")
    async def put_weights(request: Request) -> dict[str, int]:
        body = await request.body()
        count = await run_in_threadpool(service.load_weights_bytes, body)
        return {"tensors": count}

    @app.post("/save_weights")
    def save_weights(req: NameRequest) -> SavedResponse:
        return service.save_weights(req.name)

    @app.post("/save_checkpoint")
    def save_checkpoint(req: NameRequest) -> SavedResponse:
        return service.save_checkpoint(req.name)

    @app.post("/load_checkpoint")
    def load_checkpoint(req: NameRequest) -> LoadedResponse:
        return service.load_checkpoint(req.name)

    return app


def world_size(env: Mapping[str, str]) -> int:
    """Ranks the operator asked for (NNODES x NPROC_PER_NODE; unset or 0 counts as 1)."""
    nodes = int(env.get("NNODES") or 1) or 1
    procs = int(env.get("NPROC_PER_NODE") or 1) or 1
    return nodes * procs


def build_service(
    config: NexRLConfig, device: str = "auto", ranks: RankGroup | None = None
) -> TrainerService:
    """The policy from `config.model` (seeded like the controller's), the losses from the trainer
    registry plus `trainer.type` if custom, files under `<output_dir>/trainer_service/`. With `ranks`
    the policy is sharded over them (FSDP2) and every rank builds the same service."""
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    # a --device torch does not see is a ConfigError, before the model is built
    device = str(ranks.device) if ranks is not None else str(resolve_device(device, "--device"))
    model, tokenizer = build_policy(config.model)
    model.to(device)
    losses: dict[str, type[Trainer]] = dict(TRAINERS)
    losses[config.trainer.type] = resolve_class(config.trainer.type, TRAINERS, Trainer, config.recipe_dir,
                                                "trainer.type")
    root = Path(config.output_dir) / "trainer_service"
    return TrainerService(model, config.trainer, tokenizer.pad_token_id, losses, root, ranks)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it back from getsockname())."""
    return socket.create_server((host, port), reuse_port=False)


def uvicorn_server(app: FastAPI) -> uvicorn.Server:
    """The service's uvicorn settings (quiet, no lifespan), for `serve` and in-thread test servers."""
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))


def join_ranks(env: Mapping[str, str], device: str = "auto") -> RankGroup | None:
    """The process group when this process is one of several ranks (torchrun sets WORLD_SIZE);
    None for one rank. NNODES x NPROC_PER_NODE > 1 without torchrun's env is an error."""
    launched = int(env.get("WORLD_SIZE") or 1)
    asked = world_size(env)
    if launched <= 1:
        if asked > 1:
            raise NotImplementedError(
                f"NNODES x NPROC_PER_NODE = {asked} ranks, but this process is not one of them: start "
                "`nexrl serve-trainer` under torchrun (--nnodes NNODES --nproc_per_node NPROC_PER_NODE)"
            )
        return None
    return RankGroup.init(device=device)


def serve(config: NexRLConfig, host: str, port: int, device: str = "auto") -> None:
    """Build the service, listen, print the URL on one line of stdout, serve until SIGINT/SIGTERM.
    Under torchrun rank 0 serves and drives the other ranks (trainer_service/ranks.py)."""
    ranks = join_ranks(os.environ, device)
    service = build_service(config, device, ranks)
    if ranks is not None and not ranks.is_main:
        follow(service, ranks)
        return
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    ranks_note = f" ({ranks.world_size} ranks)" if ranks is not None else ""
    print(f"nexrl serve-trainer{ranks_note}: listening on http://{bound_host}:{bound_port}", flush=True)
    if ranks is None:
        uvicorn_server(create_app(service)).run(sockets=[sock])
        return
    leader = RankLeader(service, ranks)
    try:
        uvicorn_server(create_app(leader)).run(sockets=[sock])  # type: ignore[arg-type]
    finally:
        leader.stop()


def main(config: NexRLConfig, host: str, port: int, device: str) -> int:
    """Entry point of `nexrl serve-trainer` once the config is loaded."""
    try:
        serve(config, host, port, device)
    except NotImplementedError as err:
        print(f"nexrl: {err}", file=sys.stderr)
        return 2
    return 0
