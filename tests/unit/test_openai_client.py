"""The OpenAI client and the weight routes against real HTTP servers on loopback: the local
OpenAI-compatible server fronting the in-process engine (the vLLM API subset NexRL uses)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import torch
from fake_openai_server import LocalServerState, create_app
from threaded_server import ThreadedServer

from nexrl_runtime.config.schema import ModelConfig
from nexrl_runtime.inference import LocalEngine, OpenAIEngine, SamplingParams
from nexrl_runtime.inference.http_util import InferenceHTTPError
from nexrl_runtime.inference.vllm_server import free_port
from nexrl_runtime.inference.vllm_weights import DiskWeightPusher, savable
from nexrl_runtime.models import build_policy

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=6)


def tiny_engine(seed: int) -> tuple[LocalEngine, object]:
    torch.manual_seed(seed)
    model, tok = build_policy(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, max_positions=64))
    return LocalEngine(model, tok.pad_token_id, tok.eos_token_id, seed=seed), tok


@pytest.fixture
def serve() -> Iterator:
    """serve(seed) -> (state, url): a local server over a fresh tiny engine; all stop at teardown."""
    running: list[ThreadedServer] = []

    def start(seed: int = 0) -> tuple[LocalServerState, str]:
        engine, tok = tiny_engine(seed)
        state = LocalServerState(engine, tok)
        running.append(ThreadedServer(create_app(state)).start())
        return state, running[-1].url

    yield start
    for server in running:
        server.stop()


def paths(state: LocalServerState) -> list[str]:
    return [p for _, p, _ in state.requests]


def prompts(tok: object) -> list[list[int]]:
    return [tok(t)["input_ids"] for t in ("12+3=", "7+8=", "1=")]  # type: ignore[operator]


def test_completions_carry_token_ids_and_logprobs_of_the_served_policy(serve) -> None:
    state, url = serve()
    reference, tok = tiny_engine(0)
    with_n = SamplingParams(temperature=1.0, max_new_tokens=5, n=3)
    engine = OpenAIEngine([url])
    try:
        out = engine.generate(prompts(tok), with_n)
        assert [len(g) for g in out] == [3, 3, 3]
        for prompt, group in zip(prompts(tok), out, strict=True):
            for c in group:
                assert c.prompt_ids == prompt and 1 <= len(c.token_ids) == len(c.logprobs) <= 5
                full = torch.tensor([c.prompt_ids + c.token_ids])
                with torch.no_grad():
                    logits = reference.model(full).logits[0, :-1]
                ref = torch.log_softmax(logits, -1).gather(-1, full[0, 1:, None]).squeeze(-1)
                assert torch.allclose(ref[len(prompt) - 1 :], torch.tensor(c.logprobs), atol=1e-5)
        greedy = engine.generate(prompts(tok), GREEDY)
        direct = reference.generate(prompts(tok), GREEDY)
        assert [g[0].token_ids for g in greedy] == [d[0].token_ids for d in direct]
        assert engine.client.model == "policy"  # discovered from GET /v1/models
        # one request per prompt, so replicas can share a batch
        assert paths(state).count("/v1/completions") == 6
    finally:
        engine.close()


def test_chat_and_agenerate_from_another_event_loop(serve) -> None:
    _, url = serve()
    engine = OpenAIEngine([url], model="policy")
    try:
        chat = engine.chat([{"role": "user", "content": "12+3="}], SamplingParams(max_new_tokens=4, n=2))
        assert len(chat) == 2 and all(c.prompt_ids and len(c.token_ids) == len(c.logprobs) for c in chat)
        assert all(isinstance(c.extra["text"], str) for c in chat)
        _, tok = tiny_engine(0)
        out = asyncio.run(engine.agenerate(prompts(tok), GREEDY))
        assert out == engine.generate(prompts(tok), GREEDY)
    finally:
        engine.close()


def test_5xx_is_retried_4xx_is_not(serve) -> None:
    state, url = serve()
    _, tok = tiny_engine(0)
    engine = OpenAIEngine([url], model="policy", max_retries=2, backoff_s=0.01)
    try:
        state.fail_next.extend([503, 500])
        assert len(engine.generate(prompts(tok)[:1], GREEDY)[0]) == 1
        assert paths(state).count("/v1/completions") == 3
        state.fail_next.extend([503, 503, 503])  # one more than the retries
        with pytest.raises(InferenceHTTPError) as err:
            engine.generate(prompts(tok)[:1], GREEDY)
        assert err.value.status == 503
        state.requests.clear()
        state.fail_next.append(422)
        with pytest.raises(InferenceHTTPError, match=r"422.*will not succeed on retry"):
            engine.generate(prompts(tok)[:1], GREEDY)
        assert paths(state) == ["/v1/completions"]
        with pytest.raises(InferenceHTTPError, match=r"404.*does not exist"):  # a real 4xx from the route
            OpenAIEngine([url], model="nope", max_retries=2).generate(prompts(tok)[:1], GREEDY)
    finally:
        engine.close()


def test_timeouts_and_dead_replicas(serve) -> None:
    state, url = serve()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    _, tok = tiny_engine(0)
    engine = OpenAIEngine([dead, url], model="policy", max_retries=1, backoff_s=0.01, balance="round-robin")
    try:  # every request that lands on the dead replica is retried on the live one
        out = engine.generate(prompts(tok), GREEDY)
        assert len(out) == 3 and paths(state).count("/v1/completions") == 3
        assert [r.served for r in engine.replicas] == [0, 3]
    finally:
        engine.close()
    slow = OpenAIEngine([url], model="policy", timeout_s=0.3, max_retries=0)
    state.delay_s = 2.0
    try:
        with pytest.raises(httpx.ReadTimeout):
            slow.generate(prompts(tok)[:1], GREEDY)
    finally:
        slow.close()
    only_dead = OpenAIEngine([dead], model="policy", max_retries=2, backoff_s=0.01)
    try:
        with pytest.raises(httpx.ConnectError):
            only_dead.generate(prompts(tok)[:1], GREEDY)
    finally:
        only_dead.close()


@pytest.mark.parametrize("balance", ["round-robin", "least-outstanding"])
def test_replicas_share_the_requests(serve, balance: str) -> None:
    (a, url_a), (b, url_b) = serve(), serve()
    a.delay_s = b.delay_s = 0.05  # keep requests outstanding long enough to count
    _, tok = tiny_engine(0)
    engine = OpenAIEngine([url_a, url_b], model="policy", balance=balance)  # type: ignore[arg-type]
    try:
        engine.generate(prompts(tok) * 4, GREEDY)
        counts = [paths(s).count("/v1/completions") for s in (a, b)]
        assert counts == [6, 6]
        assert all(r.outstanding == 0 for r in engine.replicas)
    finally:
        engine.close()


def test_disk_push_changes_outputs_and_restores_them(serve, tmp_path) -> None:
    state, url = serve(0)
    other, tok = tiny_engine(1)
    original = {k: v.clone() for k, v in state.engine.model.state_dict().items()}
    engine = OpenAIEngine([url], model="policy", pusher=DiskWeightPusher([url], tmp_path / "w"))
    try:
        before = engine.generate(prompts(tok), GREEDY)
        state.requests.clear()
        engine.load_weights(other.model.state_dict(), version=1)
        assert paths(state) == ["/pause", "/collective_rpc", "/update_weight_version", "/resume"]
        rpc = state.requests[1][2]
        assert rpc == {
            "method": "reload_weights",
            "kwargs": {"weights_path": str((tmp_path / "w").resolve())},
        }
        after = engine.generate(prompts(tok), GREEDY)
        assert [g[0].token_ids for g in after] == [
            g[0].token_ids for g in other.generate(prompts(tok), GREEDY)
        ]
        assert [g[0].logprobs for g in after] != [g[0].logprobs for g in before]
        assert {c.policy_version for g in after for c in g} == {1}
        assert httpx.get(f"{url}/weight_info").json() == {"weight_version": "1"}
        engine.load_weights(original, version=2)
        restored = engine.generate(prompts(tok), GREEDY)
        assert [(c.token_ids, c.logprobs) for g in restored for c in g] == [
            (c.token_ids, c.logprobs) for g in before for c in g
        ]
        assert engine.pusher.last["bytes"] > 0  # type: ignore[union-attr]
    finally:
        engine.close()


def test_a_failed_reload_raises_and_leaves_the_server_serving(serve, tmp_path) -> None:
    state, url = serve(0)
    pusher = DiskWeightPusher([url], tmp_path / "w")
    bad = {"not.a.weight": torch.zeros(2)}
    try:
        with pytest.raises(InferenceHTTPError, match="collective_rpc -> HTTP 500"):
            pusher.push(bad, 1)
        assert paths(state)[-1] == "/resume" and state.gate().is_set()
    finally:
        pusher.close()


def test_push_waits_for_in_flight_requests(serve, tmp_path) -> None:
    state, url = serve(0)
    other, tok = tiny_engine(1)
    state.delay_s = 0.5
    engine = OpenAIEngine([url], model="policy", pusher=DiskWeightPusher([url], tmp_path / "w"))
    try:

        async def generate_then_push() -> list:
            gen = asyncio.ensure_future(engine.agenerate(prompts(tok)[:1], GREEDY))
            await asyncio.sleep(0.2)  # the request is in flight on the server
            await asyncio.to_thread(engine.load_weights, other.model.state_dict(), 1)
            return await gen

        out = asyncio.run(generate_then_push())
        expected = tiny_engine(0)[0].generate(prompts(tok)[:1], GREEDY)
        assert out[0][0].token_ids == expected[0][0].token_ids and out[0][0].policy_version == 0
    finally:
        engine.close()


def test_savable_unshares_tied_weights() -> None:
    w = torch.randn(4, 3)
    out = savable({"embed.weight": w, "lm_head.weight": w})
    assert torch.equal(out["embed.weight"], out["lm_head.weight"])
    assert out["embed.weight"].data_ptr() != out["lm_head.weight"].data_ptr()
