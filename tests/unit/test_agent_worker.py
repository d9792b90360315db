"""The agent worker against a scripted policy: the tool runs with the model's arguments, its result
is fed back, the loss mask covers exactly the sampled tokens with their logprobs, failures and
timeouts become results, max_turns and truncation end a conversation with their rewards; the same
through OpenAIEngine against the local OpenAI-compatible server."""

from __future__ import annotations

import re

import pytest
from agent_recipe import ProductEvaluator, item, make_worker, write_recipe
from fake_openai_server import LocalServerState, create_app
from scripted_policy import ScriptedEngine, chat_tokenizer, plain_tokenizer
from threaded_server import ThreadedServer

from nexrl_runtime.config.schema import ErrorsConfig
from nexrl_runtime.errors import ErrorBook, InferenceFailed, RunStopped
from nexrl_runtime.inference import OpenAIEngine
from nexrl_runtime.registry import load_object
from nexrl_runtime.rollout import EvalResult
from nexrl_runtime.rollout.agent import AgentEvaluator, AgentWorker
from nexrl_runtime.rollout.worker import WORKERS
from nexrl_runtime.types import Trajectory

ALL_TOOLS = ["aslow", "boom", "calc", "meet", "open", "slow", "wait"]


def plain_script(tool: str = "calc"):
    """Calls `tool` on the prompt's product, then answers with what the tool said."""

    def script(context: str) -> str:
        results = re.findall(r"\]=([^;]*);", context)
        if results:
            return results[-1]
        return f"[{tool}:{context.rstrip('=').split()[-1]}]"

    return script


class Generous(AgentEvaluator):
    def evaluate_trace(self, item, trace) -> EvalResult:
        return EvalResult(1.0, False)


def sampled(t: Trajectory) -> tuple[list[int], list[float]]:
    on = [i for i, m in enumerate(t.loss_mask) if m]
    return [t.tokens[i] for i in on], [t.logprobs[i] for i in on]


def emitted(engine: ScriptedEngine) -> tuple[list[int], list[float]]:
    ids = [i for e, _ in engine.emitted for i in e]
    return ids, [lp for _, e in engine.emitted for lp in e]


def test_agent_is_a_registered_worker() -> None:
    assert WORKERS["agent"] is AgentWorker


def test_plain_format_calls_the_tool_feeds_back_its_result_and_masks_only_sampled_tokens(tmp_path) -> None:
    root = write_recipe(tmp_path)
    tok = plain_tokenizer()
    engine = ScriptedEngine(tok, plain_script())
    evaluator = ProductEvaluator()
    worker = make_worker(engine, tok, root, evaluator)
    [traj] = worker.rollout([item("12*34=", "408")])
    calls = load_object("agent_workspace/tools.py:CALLS", root)
    assert calls == ["12*34"]
    assert engine.contexts == ["12*34=", "12*34=[calc:12*34]=408;"]  # the result is fed back
    assert tok.decode(traj.tokens, skip_special_tokens=True) == "12*34=[calc:12*34]=408;408"
    assert sampled(traj) == emitted(engine)  # exactly the sampled tokens and their logprobs
    assert traj.prompt_length == len("12*34=") and traj.tokens[-1] == tok.eos_token_id
    assert traj.reward == 1.0 and traj.extra["correct"] is True
    [trace] = evaluator.traces
    assert trace.answer == "408" and trace.finish == "answer"
    assert [(o.call.name, o.call.arguments, o.result, o.status) for o in trace.calls] == [
        ("calc", {"expression": "12*34"}, "408", "ok")
    ]
    metrics = traj.extra["eval_metrics"]
    assert metrics["calls_seen"] == 1.0 and metrics["agent_tool_calls"] == 1.0 and metrics["agent_turns"] == 2


def test_chat_template_hermes_calls_and_tool_messages(tmp_path) -> None:
    root = write_recipe(tmp_path, stop={"tokens": []}, system_prompt="Use tools. Task: {{ kind }}")
    tok = chat_tokenizer()

    def script(context: str) -> str:
        if "<tool_response>" in context:
            return "It is " + context.rsplit("<tool_response>", 1)[1].split("<")[0]
        return 'ok <tool_call>{"name": "calc", "arguments": {"expression": "7*6"}}</tool_call>'

    engine = ScriptedEngine(tok, script)
    evaluator = ProductEvaluator()
    worker = make_worker(engine, tok, root, evaluator, max_len=4000, max_new=200)
    [traj] = worker.rollout([item("7*6?", "It is 42", kind="math")])
    text = tok.decode(traj.tokens, skip_special_tokens=False)
    first, second = engine.contexts
    assert first.startswith("<|im_start|>system\ntools: [") and "Use tools. Task: math" in first
    assert first.endswith("<|im_start|>user\n7*6?<|im_end|>\n<|im_start|>assistant\n")
    # the model's turn (ending in its own eos) + the template's newline + the tool message + next prompt
    assert second == first + (
        'ok <tool_call>{"name": "calc", "arguments": {"expression": "7*6"}}</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>42</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert text == second + "It is 42<|im_end|>"
    assert sampled(traj) == emitted(engine)
    assert traj.reward == 1.0 and evaluator.traces[0].answer == "It is 42"


def test_tool_exceptions_timeouts_and_unknown_tools_are_results_not_crashes(tmp_path) -> None:
    root = write_recipe(tmp_path)
    tok = plain_tokenizer()
    evaluator = ProductEvaluator()
    for tool, status, shown in [
        ("boom", "error", "error: ZeroDivisionError: no 2*3"),
        ("slow", "timeout", "error: the tool timed out after 0.2 s"),
        ("aslow", "timeout", "error: the tool timed out after 0.2 s"),
        ("nope", "unknown", f"error: unknown tool 'nope'; tools: {ALL_TOOLS}"),
    ]:
        engine = ScriptedEngine(tok, plain_script(tool))
        [traj] = make_worker(engine, tok, root, evaluator).rollout([item("2*3=", "6")])
        [outcome] = evaluator.traces[-1].calls
        assert (outcome.status, outcome.result) == (status, shown)
        assert engine.contexts[1] == f"2*3=[{tool}:2*3]={shown};"
        assert traj.reward == 0.0 and sampled(traj) == emitted(engine)
        if status == "timeout":
            assert outcome.seconds < 1.5 and traj.extra["eval_metrics"]["agent_tool_timeouts"] == 1.0
        if status == "error":
            assert traj.extra["eval_metrics"]["agent_tool_errors"] == 1.0


def test_calls_of_one_turn_run_concurrently(tmp_path) -> None:
    """`meet` passes a 2-party barrier only if both calls of the turn run at the same time."""
    root = write_recipe(tmp_path, stop={"tokens": []})
    tok = plain_tokenizer()

    def script(context: str) -> str:
        return "done" if "=a;" in context else "[meet:a][meet:b]"

    evaluator = ProductEvaluator()
    engine = ScriptedEngine(tok, script)
    make_worker(engine, tok, root, evaluator).rollout([item("x", "done")])
    assert [(o.result, o.status) for o in evaluator.traces[0].calls] == [("a", "ok"), ("b", "ok")]
    assert engine.contexts[1] == "x[meet:a][meet:b]<eos>=a;=b;"


def test_max_turns_ends_a_conversation_that_keeps_calling(tmp_path) -> None:
    root = write_recipe(tmp_path, max_turns=2)
    tok = plain_tokenizer()
    evaluator = ProductEvaluator()
    engine = ScriptedEngine(tok, lambda ctx: "[calc:2*2]")
    [traj] = make_worker(engine, tok, root, evaluator).rollout([item("q", "4")])
    trace = evaluator.traces[0]
    assert len(engine.contexts) == 2 and trace.finish == "max_turns" and trace.answer is None
    assert len(trace.calls) == 1  # the last turn's call is not run: no turn is left to read it
    assert traj.reward == 0.0 and traj.extra["agent_max_turns"] == 1.0 and sampled(traj) == emitted(engine)


def test_truncation_at_max_sequence_length_gets_the_configured_reward(tmp_path) -> None:
    tok = plain_tokenizer()
    for setting, reward in [(0.0, 0.0), (-1.0, -1.0), ("evaluator", 1.0)]:
        root = write_recipe(tmp_path / str(setting), truncated_reward=setting)
        # "12*34=" (6) + "[calc:12*34]" (12) + "=408;" (5) + "408<eos>" (4) = 27 tokens
        engine = ScriptedEngine(tok, plain_script())
        ev = Generous() if setting == "evaluator" else ProductEvaluator()
        [traj] = make_worker(engine, tok, root, ev, max_len=25).rollout([item("12*34=", "408")])
        assert len(traj.tokens) == 25 and traj.finish_reason == "length" and traj.reward == reward
        assert tok.decode(traj.tokens, skip_special_tokens=True) == "12*34=[calc:12*34]=408;40"
        assert sampled(traj) == emitted(engine)
    # a tool result that does not fit is cut, and the conversation ends there
    root = write_recipe(tmp_path / "cut")
    engine = ScriptedEngine(tok, plain_script())
    [traj] = make_worker(engine, tok, root, max_len=20).rollout([item("12*34=", "408")])
    assert tok.decode(traj.tokens) == "12*34=[calc:12*34]=4" and len(engine.contexts) == 1
    assert traj.finish_reason == "length" and traj.reward == 0.0


def test_turns_of_many_conversations_share_engine_calls(tmp_path) -> None:
    """Batch mode: 16 conversations of 2 turns each take far fewer than 32 generate calls."""
    root = write_recipe(tmp_path)
    tok = plain_tokenizer()
    engine = ScriptedEngine(tok, plain_script())
    worker = make_worker(engine, tok, root)
    items = [item(f"{i}*{i + 1}=", str(i * (i + 1)), group=f"g{i}") for i in range(2, 18)]
    trajs = worker.rollout(items)
    assert [t.reward for t in trajs] == [1.0] * 16
    assert [t.group_id for t in trajs] == [it.group_id for it in items]
    assert sum(engine.calls) == 32 and len(engine.calls) <= 4 and max(engine.calls) == 16
    assert worker.last_stats["turns"] == 32.0 and worker.last_stats["engine_calls"] == len(engine.calls)


def test_greedy_and_per_turn_sampling_reach_the_engine(tmp_path) -> None:
    root = write_recipe(tmp_path, sampling={"temperature": 0.7, "max_new_tokens": 30})
    tok = plain_tokenizer()
    seen = []

    class Recording(ScriptedEngine):
        def generate(self, prompts, params):
            seen.append(params)
            return super().generate(prompts, params)

    worker = make_worker(Recording(tok, plain_script()), tok, root)
    worker.rollout([item("2*3=", "6")])
    worker.rollout([item("2*3=", "6")], greedy=True)
    assert [p.temperature for p in seen] == [0.7, 0.7, 0.0, 0.0]
    assert seen[0].max_new_tokens == 30 and seen[0].stop_token_ids == (tok.convert_tokens_to_ids("]"),)


def test_through_openai_engine_and_the_local_openai_compatible_server(tmp_path) -> None:
    """Token-id prompts over /v1/completions; the stop token travels as stop_token_ids."""
    root = write_recipe(tmp_path)
    tok = plain_tokenizer()
    scripted = ScriptedEngine(tok, plain_script())
    state = LocalServerState(scripted, tok)  # type: ignore[arg-type]  # any engine serves
    with ThreadedServer(create_app(state)) as server:
        engine = OpenAIEngine([server.url])
        try:
            evaluator = ProductEvaluator()
            worker = make_worker(engine, tok, root, evaluator)
            items = [item(f"{i}*7=", str(i * 7), group=f"g{i}") for i in range(2, 6)]
            trajs = worker.rollout(items)
        finally:
            engine.close()
    assert [t.reward for t in trajs] == [1.0] * 4
    bodies = [b for _, path, b in state.requests if path == "/v1/completions"]
    assert len(bodies) == 8 and all(isinstance(b["prompt"], list) for b in bodies)
    assert {tuple(b["stop_token_ids"]) for b in bodies} == {(tok.convert_tokens_to_ids("]"),)}
    # the trajectories hold exactly what the server's engine emitted
    all_sampled = sorted(x for t in trajs for x in zip(*sampled(t), strict=True))
    assert all_sampled == sorted(x for ids, lps in scripted.emitted for x in zip(ids, lps, strict=True))


def gate_script(context: str) -> str:
    """Conversation `a` waits on a tool that only conversation `b`'s tool call opens."""
    if "=" in context:
        return "ok"
    return "[wait:x]" if context.startswith("a") else "[open:x]"


@pytest.mark.parametrize("via", ["in-process", "http"])
def test_a_waiting_tool_does_not_hold_up_the_other_conversations(tmp_path, via) -> None:
    """`a`'s tool returns only once `b` has called its own tool: b's turns ran while a waited
    (batched engine calls in-process; one request per turn over HTTP). One conversation at a
    time, `a` times out instead (3 s)."""
    tok = plain_tokenizer()
    for concurrent, status in [(64, "ok"), (1, "timeout")]:
        root = write_recipe(tmp_path / str(concurrent), concurrency={"max_conversations": concurrent})
        evaluator = ProductEvaluator()
        scripted = ScriptedEngine(tok, gate_script)
        items = [item("a", "ok", group="ga"), item("b", "ok", group="gb")]
        if via == "http":
            with ThreadedServer(create_app(LocalServerState(scripted, tok))) as server:  # type: ignore[arg-type]
                engine = OpenAIEngine([server.url])
                try:
                    make_worker(engine, tok, root, evaluator).rollout(items)
                finally:
                    engine.close()
        else:
            make_worker(scripted, tok, root, evaluator).rollout(items)
        by_prompt = {t.item["prompt"]: t for t in evaluator.traces}
        [waited] = by_prompt["a"].calls
        assert waited.status == status
        if status == "ok":
            assert waited.result == "opened" and by_prompt["b"].calls[0].result == "done"


def test_evaluator_errors_cost_the_sample_under_policy_continue(tmp_path) -> None:
    class Picky(ProductEvaluator):
        def evaluate_trace(self, item, trace):
            if item["prompt"] == "3*3=":
                raise KeyError("no answer key")
            return super().evaluate_trace(item, trace)

    tok = plain_tokenizer()
    worker = make_worker(ScriptedEngine(tok, plain_script()), tok, write_recipe(tmp_path), Picky())
    worker.errors = ErrorBook(ErrorsConfig(policy="continue"))
    trajs = worker.rollout([item("2*3=", "6", group="a"), item("3*3=", "9", group="b")])
    assert [t.group_id for t in trajs] == ["a"] and worker.errors.counts == {"evaluator": 1}
    worker.errors = ErrorBook(ErrorsConfig(policy="stop"))
    with pytest.raises(RunStopped, match="evaluator error on item"):
        worker.rollout([item("3*3=", "9", group="b")])


def test_an_engine_failure_fails_the_rollout_call_as_inference(tmp_path) -> None:
    class Broken(ScriptedEngine):
        def generate(self, prompts, params):
            raise ConnectionError("engine gone")

    tok = plain_tokenizer()
    worker = make_worker(Broken(tok, plain_script()), tok, write_recipe(tmp_path))
    with pytest.raises(InferenceFailed, match="ConnectionError: engine gone"):
        worker.rollout([item("2*3=", "6"), item("2*4=", "8", group="g1")])
