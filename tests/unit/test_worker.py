"""Rollout worker: truncation to max_sequence_length, masks, rewards and group ids."""

from __future__ import annotations

from nexrl_runtime.config.schema import RolloutConfig, SamplingConfig
from nexrl_runtime.data.loader import Item
from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams
from nexrl_runtime.rollout import EvalResult, Evaluator, RolloutWorker
from nexrl_runtime.rollout.worker import truncate


class FixedEngine(InferenceEngine):
    """Answers every prompt with the same tokens; records the params it got."""

    def __init__(self, tokens: list[int]):
        self.tokens = tokens
        self.params: list[SamplingParams] = []

    def generate(self, prompts, params):
        self.params.append(params)
        n = len(self.tokens)
        return [
            [Completion(p, self.tokens, [-0.5] * n, "stop", self.policy_version)] * params.n for p in prompts
        ]

    def load_weights(self, state_dict, version):
        self.policy_version = version


class Tok:
    """Digits only: token id = digit value + 10."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [int(ch) + 10 for ch in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(str(i - 10) for i in ids)


class Exact(Evaluator):
    def evaluate(self, item, response):
        return EvalResult(reward=float(response == item["answer"]), correct=response == item["answer"])


def item(prompt: str, answer: str, g: str) -> Item:
    return Item({"p": prompt, "answer": answer}, prompt, g, 0, 0, 0, 0)


def test_truncate_is_pure_and_marks_length() -> None:
    c = Completion([1, 2], [5, 6, 7], [-1.0, -2.0, -3.0], "stop", 0)
    assert truncate(2, c, 10).token_ids == [5, 6, 7]
    cut = truncate(2, c, 4)
    assert (cut.token_ids, cut.logprobs, cut.finish_reason) == ([5, 6], [-1.0, -2.0], "length")


def test_rollout_builds_masked_scored_trajectories() -> None:
    engine = FixedEngine([13, 14, 15])  # "345"
    cfg = RolloutConfig(evaluator="x:Y", max_sequence_length=6, sampling=SamplingConfig(max_new_tokens=9))
    worker = RolloutWorker(engine, Tok(), Exact(), cfg, run_id="r")
    engine.policy_version = 4
    trajs = worker.rollout([item("12", "345", "g1"), item("123", "345", "g2")])
    a, b = trajs
    assert a.tokens == [11, 12, 13, 14, 15] and a.loss_mask == [0, 0, 1, 1, 1]
    assert a.logprobs == [0.0, 0.0, -0.5, -0.5, -0.5] and a.reward == 1.0 and a.extra["correct"] is True
    assert (a.group_id, a.run_id, a.policy_version, a.prompt_length) == ("g1", "r", 4, 2)
    # the longer prompt leaves room for 3 tokens: max_new_tokens is capped by max_sequence_length
    assert engine.params[0].max_new_tokens == 3
    assert b.finish_reason == "stop" and len(b.tokens) == 6
    timings = worker.pop_timings()
    assert set(timings) == {"generate_seconds", "score_seconds"} and worker.pop_timings() == {}


def test_truncated_response_is_scored_on_what_is_kept() -> None:
    engine = FixedEngine([13, 14, 15, 16])
    cfg = RolloutConfig(evaluator="x:Y", max_sequence_length=5)
    worker = RolloutWorker(engine, Tok(), Exact(), cfg, run_id="r")
    engine.generate = lambda prompts, params: [  # an engine that ignores max_new_tokens
        [Completion(p, [13, 14, 15, 16], [-0.1] * 4, "stop", 0)] for p in prompts
    ]
    (t,) = worker.rollout([item("12", "345", "g")])
    assert t.tokens == [11, 12, 13, 14, 15] and t.finish_reason == "length" and t.reward == 1.0
