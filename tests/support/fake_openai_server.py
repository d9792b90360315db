"""An OpenAI-compatible server in front of the in-process LocalEngine, speaking the vLLM subset NexRL
uses: /v1/completions and /v1/chat/completions with `return_token_ids` and logprobs, /v1/models,
/health, and the dev-mode weight routes (/pause, /resume, /collective_rpc reload_weights,
/update_weight_version, /weight_info, /get_world_size and the weight-transfer family).

A test double, not shipped: it is how the OpenAI client, the replica balancing and both weight-sync
routes are tested without vLLM. `LocalServerState.requests` logs every call; `fail_next` makes the
next calls answer with given statuses and `delay_s` slows generation (fault injection); `receiver`
stands in for the NCCL data plane of /update_weights.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from nexrl_runtime.inference.base import Completion, SamplingParams
from nexrl_runtime.inference.local import LocalEngine
from nexrl_runtime.inference.vllm_weights import WEIGHTS_FILE

# (names, dtype names, shapes) -> the received tensors, in order
Receiver = Callable[[list[str], list[str], list[list[int]]], list[torch.Tensor]]


@dataclass
class LocalServerState:
    """What the server holds besides the engine; tests read and steer it."""

    engine: LocalEngine
    tokenizer: PreTrainedTokenizerBase | None = None
    model_name: str = "policy"
    weights_path: str | None = None
    weight_version: str = "default"
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    fail_next: deque[int] = field(default_factory=deque)
    receiver: Receiver | None = None
    delay_s: float = 0.0  # added to every generation (timeouts, pause-while-busy)
    info_delay_s: float = 0.0  # added to /weight_info (a server too busy to answer a probe in time)
    in_flight: int = 0
    running: asyncio.Event | None = None  # set while not paused (made on the server's loop)

    def gate(self) -> asyncio.Event:
        if self.running is None:
            self.running = asyncio.Event()
            self.running.set()
        return self.running


def sampling(body: dict[str, Any]) -> SamplingParams:
    return SamplingParams(
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        max_new_tokens=int(body.get("max_tokens") or 16),
        n=int(body.get("n", 1)),
        stop_token_ids=tuple(body.get("stop_token_ids") or ()),
    )


def create_app(state: LocalServerState) -> FastAPI:
    """The FastAPI app over `state` (serve it with threaded_server.ThreadedServer or uvicorn)."""
    app = FastAPI(title="nexrl local OpenAI-compatible server")

    @app.middleware("http")
    async def log_and_inject(request: Request, call_next: Callable[[Request], Any]) -> Response:
        raw = await request.body()
        state.requests.append((request.method, request.url.path, _json_or_none(raw)))
        if state.fail_next:
            status = state.fail_next.popleft()
            return JSONResponse({"error": f"injected failure {status}"}, status_code=status)
        return await call_next(request)

    async def generate(prompt: list[int], body: dict[str, Any]) -> list[Completion]:
        if body.get("model") not in (None, state.model_name):
            raise HTTPException(404, f"model {body.get('model')!r} does not exist")
        await state.gate().wait()
        state.in_flight += 1
        try:
            await asyncio.sleep(state.delay_s)
            return (await asyncio.to_thread(state.engine.generate, [prompt], sampling(body)))[0]
        finally:
            state.in_flight -= 1

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": state.model_name, "object": "model"}]}

    @app.post("/v1/completions")
    async def completions(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompt = _tokenize(state, prompt)
        if not isinstance(prompt, list) or not all(isinstance(t, int) for t in prompt):
            raise HTTPException(400, "prompt must be a string or a list of token ids")
        outs = await generate(prompt, body)
        return {"object": "text_completion", "model": state.model_name, "choices": [
            {
                "index": i,
                "text": _decode(state, c.token_ids),
                "token_ids": c.token_ids,
                "prompt_token_ids": prompt,
                "finish_reason": c.finish_reason,
                "logprobs": {"token_logprobs": c.logprobs} if body.get("logprobs") is not None else None,
            }
            for i, c in enumerate(outs)
        ]}  # fmt: skip

    @app.post("/v1/chat/completions")
    async def chat(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPException(400, "messages must be a non-empty list")
        prompt = _render_chat(state, messages)
        outs = await generate(prompt, body)
        choices = []
        for i, c in enumerate(outs):
            lps = {"content": [{"logprob": x} for x in c.logprobs]} if body.get("logprobs") else None
            msg = {"role": "assistant", "content": _decode(state, c.token_ids)}
            choices.append({"index": i, "message": msg, "token_ids": c.token_ids, "logprobs": lps,
                            "finish_reason": c.finish_reason})  # fmt: skip
        return {"object": "chat.completion", "prompt_token_ids": prompt, "choices": choices}

    _weight_routes(app, state)
    return app


def _weight_routes(app: FastAPI, state: LocalServerState) -> None:
    """vLLM's dev-mode routes, with vLLM's request shapes."""

    @app.post("/pause")
    async def pause(mode: Annotated[str, Query()] = "abort") -> dict[str, str]:
        if mode != "wait":
            raise HTTPException(400, f"this server implements pause mode 'wait' only, not {mode!r}")
        state.gate().clear()
        while state.in_flight:
            await asyncio.sleep(0.005)
        return {"status": "paused"}

    @app.post("/resume")
    async def resume() -> dict[str, str]:
        state.gate().set()
        return {"status": "resumed"}

    @app.post("/collective_rpc")
    async def collective_rpc(body: Annotated[dict[str, Any], Body()]) -> Response:
        if body.get("method") != "reload_weights":
            raise HTTPException(400, f"unsupported method {body.get('method')!r}")
        path = (body.get("kwargs") or {}).get("weights_path") or state.weights_path
        if path is None:
            raise HTTPException(400, "no weights_path given and none loaded before")
        file = Path(path) / WEIGHTS_FILE
        if not file.is_file():
            raise HTTPException(400, f"{file} does not exist")
        weights = await asyncio.to_thread(load_file, str(file))
        try:
            await asyncio.to_thread(state.engine.load_weights, weights, state.engine.policy_version)
        except RuntimeError as err:  # e.g. missing/unexpected keys: the reason goes to the caller
            raise HTTPException(500, f"reload_weights failed: {err}") from err
        state.weights_path = str(path)
        return Response(status_code=200)

    @app.post("/update_weight_version")
    async def update_weight_version(new_version: Annotated[str, Body(embed=True)]) -> dict[str, Any]:
        state.weight_version = new_version
        return {"success": True, "new_version": new_version}

    @app.get("/weight_info")
    async def weight_info() -> dict[str, str]:
        await asyncio.sleep(state.info_delay_s)
        return {"weight_version": state.weight_version}

    @app.get("/get_world_size")
    async def get_world_size(include_dp: Annotated[bool, Query()] = True) -> dict[str, int]:
        return {"world_size": 1}

    @app.post("/init_weight_transfer_engine")
    async def init_transfer(init_info: Annotated[dict[str, Any], Body(embed=True)]) -> dict[str, str]:
        return {"message": "Weight transfer initialized"}

    @app.post("/start_weight_update")
    async def start_update() -> dict[str, str]:
        return {"message": "Weight update started"}

    @app.post("/update_weights")
    async def update_weights(update_info: Annotated[dict[str, Any], Body(embed=True)]) -> dict[str, str]:
        if state.receiver is None:
            raise HTTPException(501, "no weight-transfer data plane on this server")
        names, dtypes, shapes = update_info["names"], update_info["dtype_names"], update_info["shapes"]
        tensors = await asyncio.to_thread(state.receiver, names, dtypes, shapes)
        new = dict(state.engine.model.state_dict())
        new.update(zip(names, tensors, strict=True))
        await asyncio.to_thread(state.engine.load_weights, new, state.engine.policy_version)
        return {"message": "Weights updated"}

    @app.post("/finish_weight_update")
    async def finish_update(weight_version: Annotated[str | None, Body(embed=True)] = None) -> dict[str, str]:
        if weight_version is not None:
            state.weight_version = weight_version
        return {"message": "Weight update finished"}

    @app.post("/shutdown_weight_transfer_engine")
    async def shutdown_transfer() -> dict[str, str]:
        return {"message": "Weight transfer shut down"}


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def _need_tokenizer(state: LocalServerState) -> PreTrainedTokenizerBase:
    if state.tokenizer is None:
        raise HTTPException(400, "this server has no tokenizer: send prompts as token ids")
    return state.tokenizer


def _tokenize(state: LocalServerState, text: str) -> list[int]:
    return list(_need_tokenizer(state)(text, add_special_tokens=False)["input_ids"])


def _decode(state: LocalServerState, ids: list[int]) -> str:
    return "" if state.tokenizer is None else state.tokenizer.decode(ids, skip_special_tokens=True)


def _render_chat(state: LocalServerState, messages: list[dict[str, Any]]) -> list[int]:
    """The tokenizer's chat template when it has one, else the contents joined by newlines."""
    tok = _need_tokenizer(state)
    if getattr(tok, "chat_template", None):
        return _tokenize(
            state, str(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        )
    return _tokenize(state, "\n".join(str(m.get("content", "")) for m in messages))
