"""OpenAI-compatible inference over HTTP (vLLM, or any server speaking /v1/completions).

`OpenAIClient` is the async core: completions with token-id prompts, chat completions, `n`
samples, the sampled tokens' ids and logprobs (vLLM: `return_token_ids`, `logprobs: 1`), per-request
timeouts, retries with exponential backoff on connection errors and 5xx (a 4xx raises at once),
and several replicas behind one client (least outstanding requests, or round robin).

`OpenAIEngine` puts it behind the InferenceEngine interface: the client lives on a private event
loop thread, so rollout worker threads call `generate` and coroutines call `agenerate`, alike.
New weights go through a WeightPusher (vllm_weights.py); the engine records the version.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import httpx
import torch

from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams
from nexrl_runtime.inference.http_util import InferenceHTTPError, backoff_delay, check, retryable

T = TypeVar("T")
Balance = Literal["least-outstanding", "round-robin"]


@dataclass(eq=False)
class Replica:
    """One server; `outstanding` counts its requests in flight, `served` those answered; `down`
    when it failed to connect since the driver last vouched for it (a managed set only)."""

    url: str
    outstanding: int = 0
    served: int = 0
    down: bool = False


class ReplicaSet:
    """Picks the replica for the next request. Used from one event loop only (no locks).

    A set the driver manages (`update`, HTTP inference on Ray) sidelines a replica whose
    connection failed until the driver names it again: a server that restarted must not serve
    this worker's requests before the driver has pushed it the current weights."""

    def __init__(self, urls: Sequence[str], balance: Balance = "least-outstanding") -> None:
        if not urls:
            raise ValueError("no inference servers: give at least one base URL")
        self.replicas = [Replica(u.rstrip("/")) for u in urls]
        self.balance = balance
        self.managed = False
        self._turn = itertools.count()

    def update(self, urls: Sequence[str]) -> None:
        """Serve exactly `urls` from now on (keeping the counters of the replicas kept)."""
        if not urls:
            raise ValueError("no inference replica serves the current weights")
        known = {r.url: r for r in self.replicas}
        self.replicas = [known.get(u.rstrip("/")) or Replica(u.rstrip("/")) for u in urls]
        for r in self.replicas:
            r.down = False
        self.managed = True

    def sideline(self, replica: Replica) -> None:
        if self.managed:
            replica.down = True

    def pick(self, avoid: Sequence[Replica] = ()) -> Replica:
        """Round robin; or the fewest outstanding requests, ties broken in round-robin order.
        Replicas in `avoid` (those that just failed this request) or down are used only if all are."""
        start = next(self._turn) % len(self.replicas)
        order = self.replicas[start:] + self.replicas[:start]
        order = [r for r in order if r not in avoid and not r.down] or order
        if self.balance == "round-robin":
            return order[0]
        return min(order, key=lambda r: r.outstanding)


class OpenAIClient:
    """Async client of one or more OpenAI-compatible servers. Create and use it on one event loop."""

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        balance: Balance = "least-outstanding",
        api_key: str | None = None,
    ) -> None:
        self.replicas = ReplicaSet(base_urls, balance)
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            headers=headers,
        )

    async def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One JSON call on the replica the balancer picks, retried (possibly elsewhere) with backoff."""
        failed: list[Replica] = []
        for attempt in itertools.count():
            replica = self.replicas.pick(avoid=failed)
            replica.outstanding += 1
            try:
                resp = await self.http.request(method, f"{replica.url}{path}", json=body)
                data = check(resp).json() if resp.content else None
                replica.served += 1
                return data
            except (httpx.TransportError, InferenceHTTPError) as err:
                if isinstance(err, httpx.TransportError):
                    self.replicas.sideline(replica)
                if not retryable(err) or attempt >= self.max_retries:
                    raise
                failed.append(replica)
            finally:
                replica.outstanding -= 1
            await asyncio.sleep(backoff_delay(attempt, self.backoff_s))
        raise AssertionError("unreachable")

    async def model_name(self) -> str:
        """The configured model, else the first one `GET /v1/models` lists."""
        if self.model is None:
            listed = (await self.request("GET", "/v1/models"))["data"]
            if not listed:
                raise RuntimeError("GET /v1/models lists no model; set inference.served_model_name")
            self.model = str(listed[0]["id"])
        return self.model

    async def _body(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": await self.model_name(),
            "n": params.n,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "return_token_ids": True,  # vLLM: the sampled token ids, not just text
        }
        if params.stop_token_ids:
            body["stop_token_ids"] = list(params.stop_token_ids)
        return body

    async def complete(self, prompt_ids: list[int], params: SamplingParams, version: int) -> list[Completion]:
        """`params.n` completions of one token-id prompt, with the sampled tokens' logprobs."""
        body = {**await self._body(params), "prompt": list(prompt_ids), "logprobs": 1}
        data = await self.request("POST", "/v1/completions", body)
        return [
            _completion(prompt_ids, c, (c.get("logprobs") or {}).get("token_logprobs"), version)
            for c in _choices(data, params.n)
        ]

    async def chat(
        self, messages: list[dict[str, Any]], params: SamplingParams, version: int
    ) -> list[Completion]:
        """`params.n` chat completions; prompt ids are the server's rendering of `messages`."""
        body = {**await self._body(params), "messages": messages, "logprobs": True}
        data = await self.request("POST", "/v1/chat/completions", body)
        prompt = list(data.get("prompt_token_ids") or [])
        out = []
        for c in _choices(data, params.n):
            content = (c.get("logprobs") or {}).get("content")
            lps = None if content is None else [t["logprob"] for t in content]
            out.append(_completion(prompt, c, lps, version, text=(c.get("message") or {}).get("content")))
        return out

    async def aclose(self) -> None:
        await self.http.aclose()


def _choices(data: dict[str, Any], n: int) -> list[dict[str, Any]]:
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(choices) != n:
        raise RuntimeError(f"asked for n={n} samples, the server returned {len(choices)}")
    return choices


def _completion(
    prompt: list[int], c: dict[str, Any], logprobs: list[float] | None, version: int, text: str | None = None
) -> Completion:
    ids = c.get("token_ids")
    if ids is None or logprobs is None or len(logprobs) != len(ids):
        raise RuntimeError(
            "the server did not return the sampled token ids and one logprob per token "
            f"(token_ids={ids is not None}, logprobs={None if logprobs is None else len(logprobs)}); "
            "vLLM returns them for `return_token_ids: true` with logprobs"
        )
    if not prompt and c.get("prompt_token_ids"):
        prompt = list(c["prompt_token_ids"])
    return Completion(
        prompt_ids=list(prompt),
        token_ids=[int(t) for t in ids],
        logprobs=[float(x) for x in logprobs],
        finish_reason=str(c.get("finish_reason") or "length"),
        policy_version=version,
        extra={"text": c.get("text") if text is None else text},
    )


class LoopThread:
    """A private event loop on a daemon thread: runs coroutines for sync callers and other loops."""

    def __init__(self, name: str = "openai-client") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the private loop and block for its result (never call from that loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` from any event loop."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class WeightPusher(Protocol):
    """Moves a state dict into the servers and labels them with `version` (see vllm_weights.py)."""

    def push(self, state_dict: Mapping[str, torch.Tensor], version: int,
             urls: Sequence[str] | None = None) -> None:
        """To every replica it was made for, or to those in `urls`."""

    def close(self) -> None: ...


class OpenAIEngine(InferenceEngine):
    """InferenceEngine over OpenAI-compatible servers. Completions carry the version the engine held
    when the request started; a push pauses the servers, so no completion mixes two versions."""

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        balance: Balance = "least-outstanding",
        pusher: WeightPusher | None = None,
        version: int = 0,
    ) -> None:
        self.policy_version = version
        self.pusher = pusher
        self._loop = LoopThread()
        self._cleanup = contextlib.ExitStack()
        self._cleanup.callback(self._loop.close)

        async def make() -> OpenAIClient:  # httpx binds its pool to the loop it is created on
            return OpenAIClient(base_urls, model, timeout_s, max_retries, backoff_s, balance)

        self.client = self._loop.run(make())
        self._cleanup.callback(lambda: self._loop.run(self.client.aclose()))

    def on_close(self, fn: Callable[[], object]) -> None:
        """Run `fn()` at close, before the client shuts down (e.g. stop a server this engine started)."""
        self._cleanup.callback(fn)

    @property
    def replicas(self) -> list[Replica]:
        return self.client.replicas.replicas

    def use(self, urls: Sequence[str], version: int) -> None:
        """Serve from exactly `urls`, which hold policy `version` (the driver keeps the list)."""

        async def update() -> None:  # the replica set lives on the client's loop
            self.client.replicas.update(urls)

        self._loop.run(update())
        self.policy_version = version

    async def _generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        version = self.policy_version
        return list(await asyncio.gather(*(self.client.complete(p, params, version) for p in prompts)))

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        return self._loop.run(self._generate(prompts, params))

    async def agenerate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        return await self._loop.arun(self._generate(prompts, params))

    def chat(self, messages: list[dict[str, Any]], params: SamplingParams) -> list[Completion]:
        """`params.n` chat completions (for agentic workers that speak messages, not token ids)."""
        return self._loop.run(self.client.chat(messages, params, self.policy_version))

    async def achat(self, messages: list[dict[str, Any]], params: SamplingParams) -> list[Completion]:
        return await self._loop.arun(self.client.chat(messages, params, self.policy_version))

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        if self.pusher is None:
            raise RuntimeError(
                "this engine has no weight sync route (inference.weight_sync: none); "
                "it cannot serve new policy weights"
            )
        self.pusher.push(state_dict, version)
        self.policy_version = version

    def close(self) -> None:
        """Close the weight route (it may still talk to the servers), then the rest, newest first."""
        try:
            if self.pusher is not None:
                self.pusher.close()
        finally:
            self._cleanup.close()
