"""A conversation as one token sequence, what happened in it (the trace an evaluator reads), and
the Trajectory made of it: loss_mask 1 exactly on the tokens the model sampled, their logprobs
aligned, 0 on everything the renderer added (prompt, template, tool results)."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from nexrl_runtime.rollout.agent.tools import ToolOutcome
from nexrl_runtime.rollout.evaluator import EvalResult, Evaluator
from nexrl_runtime.types import Trajectory

Finish = Literal["answer", "max_turns", "length"]


@dataclass
class Turn:
    """One model turn: its text (decoded from its sampled tokens) and its calls' outcomes."""

    text: str
    num_tokens: int
    outcomes: list[ToolOutcome] = field(default_factory=list)
    policy_version: int = 0


@dataclass
class AgentTrace:
    """What an agent evaluator sees: the final answer (None unless the model gave one), every
    turn, every call with its result, and why the conversation ended."""

    item: dict[str, Any]
    turns: list[Turn] = field(default_factory=list)
    answer: str | None = None
    finish: Finish = "answer"
    tokens: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    prompt_length: int = 0

    @classmethod
    def answer_only(cls, item: dict[str, Any], answer: str) -> AgentTrace:
        return cls(item, [Turn(answer, 0)], answer)

    @property
    def calls(self) -> list[ToolOutcome]:
        return [o for t in self.turns for o in t.outcomes]

    def add_context(self, ids: list[int]) -> None:
        self.tokens += ids
        self.loss_mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)

    def add_sampled(self, ids: list[int], logprobs: list[float]) -> None:
        if len(ids) != len(logprobs):
            raise ValueError(f"{len(ids)} sampled tokens came with {len(logprobs)} logprobs")
        self.tokens += ids
        self.loss_mask += [1] * len(ids)
        self.logprobs += list(logprobs)

    def stats(self) -> dict[str, float]:
        """Per-conversation counts (batch means in metrics.jsonl as eval/agent_*)."""
        calls = self.calls
        count = {s: float(sum(o.status == s for o in calls)) for s in ("error", "timeout", "invalid")}
        return {
            "agent_turns": float(len(self.turns)),
            "agent_tool_calls": float(len(calls)),
            "agent_tool_errors": count["error"],
            "agent_tool_timeouts": count["timeout"],
            "agent_bad_calls": count["invalid"] + sum(o.status in ("unknown", "unparsed") for o in calls),
            "agent_truncated": float(self.finish == "length"),
            "agent_max_turns": float(self.finish == "max_turns"),
            "agent_answered": float(self.answer is not None),
        }


class AgentEvaluator(Evaluator):
    """Scores a whole conversation. A plain Evaluator works with the agent worker too: it gets the
    final answer (or "" when there is none) as its response."""

    @abstractmethod
    def evaluate_trace(self, item: dict[str, Any], trace: AgentTrace) -> EvalResult: ...

    def evaluate(self, item: dict[str, Any], response: str) -> EvalResult:
        return self.evaluate_trace(item, AgentTrace.answer_only(item, response))


def score(evaluator: Evaluator, item: dict[str, Any], trace: AgentTrace) -> EvalResult:
    if isinstance(evaluator, AgentEvaluator):
        return evaluator.evaluate_trace(item, trace)
    return evaluator.evaluate(item, trace.answer or "")


def to_trajectory(
    trace: AgentTrace,
    result: EvalResult,
    truncated_reward: float | str,
    group_id: str,
    run_id: str,
    sample_id: Any = None,
) -> Trajectory:
    """The conversation as one Trajectory; a truncated one gets `truncated_reward` unless that is
    'evaluator'. Its policy version is its oldest turn's (staleness counts from the oldest)."""
    reward = float(result.reward)
    if trace.finish == "length" and truncated_reward != "evaluator":
        reward = float(truncated_reward)
    versions = [t.policy_version for t in trace.turns] or [0]
    metrics = {**result.metrics, **trace.stats()}
    return Trajectory(
        tokens=list(trace.tokens),
        loss_mask=list(trace.loss_mask),
        logprobs=list(trace.logprobs),
        reward=reward,
        group_id=group_id,
        run_id=run_id,
        policy_version=min(versions),
        prompt_length=trace.prompt_length,
        finish_reason="length" if trace.finish == "length" else "stop",
        extra={
            "correct": result.correct,
            "sample_id": sample_id,
            "agent_finish": trace.finish,
            "policy_versions": versions,
            **metrics,
            "eval_metrics": metrics,
        },
    )
