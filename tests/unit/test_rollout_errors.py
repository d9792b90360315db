"""RolloutManager under errors.policy=continue: a failed generate call counts as errors_inference,
its groups are rolled out again at once, and what reaches the pool is whole groups."""

from __future__ import annotations

import httpx
import pytest

from nexrl_runtime.config.schema import ErrorsConfig, RolloutConfig, SamplingConfig
from nexrl_runtime.data.loader import Item
from nexrl_runtime.errors import ErrorBook, RunStopped
from nexrl_runtime.rollout import EvalResult, RolloutWorker
from nexrl_runtime.rollout.manager import RolloutManager
from tests.unit.test_worker import Exact, FixedEngine, Tok


class FlakyEngine(FixedEngine):
    """Fails its first `fail` generate calls as an HTTP engine does past its retries."""

    def __init__(self, tokens: list[int], fail: int):
        super().__init__(tokens)
        self.fail = fail
        self.policy_version = 0

    def generate(self, prompts, params):
        if self.fail:
            self.fail -= 1
            raise httpx.ConnectError("connection refused (after 3 retries)")
        return super().generate(prompts, params)


class Boom(Exact):
    def evaluate(self, item, response):
        raise KeyError("answer")


def items(groups: int, n: int) -> list[Item]:
    return [Item({"answer": "1"}, "12", f"g{g}", k, 0, g, g) for g in range(groups) for k in range(n)]


def manager(engine, errors: ErrorBook, evaluator=None) -> RolloutManager:
    cfg = RolloutConfig(evaluator="x.py:X", max_sequence_length=16, sampling=SamplingConfig(max_new_tokens=2))
    worker = RolloutWorker(engine, Tok(), evaluator or Exact(), cfg, "run")
    worker.errors = errors
    return RolloutManager([worker], None, None, None, errors)  # type: ignore[arg-type]


def test_inference_failure_counts_and_rerolls_the_groups() -> None:
    errors = ErrorBook(ErrorsConfig(policy="continue"))
    m = manager(FlakyEngine([11], fail=1), errors)
    trajs, _ = m.run_items(items(3, 2))
    assert len(trajs) == 6 and sorted({t.group_id for t in trajs}) == ["g0", "g1", "g2"]
    assert errors.metrics()["errors_inference"] == 6.0  # the 6 samples of the failed call
    assert errors.metrics()["errors_rollout"] == 0.0


def test_inference_failure_stops_under_stop() -> None:
    m = manager(FlakyEngine([11], fail=1), ErrorBook(ErrorsConfig(policy="stop")))
    with pytest.raises(RunStopped, match=r"inference error on item g0-s0 \(data index 0\).*ConnectError"):
        m.run_items(items(1, 2))


def test_an_item_that_always_fails_stops_the_run() -> None:
    errors = ErrorBook(ErrorsConfig(policy="continue"))
    m = manager(FlakyEngine([11], fail=0), errors, Boom())
    with pytest.raises(RunStopped, match=r"item g0-s0 .* failed in 11 rollouts in a row"):
        m.run_items(items(1, 2))
    assert errors.metrics()["errors_evaluator"] == 22.0


def test_max_consecutive_cap() -> None:
    errors = ErrorBook(ErrorsConfig(policy="continue", max_consecutive=2))
    m = manager(FlakyEngine([11], fail=0), errors, Boom())
    with pytest.raises(RunStopped, match=r"3 consecutive failed samples exceed errors.max_consecutive=2"):
        m.run_items(items(1, 4))


class NaNReward(Exact):
    def evaluate(self, item, response):
        return EvalResult(reward=float("nan"))


def test_a_nan_reward_is_an_evaluator_error() -> None:
    m = manager(FlakyEngine([11], fail=0), ErrorBook(ErrorsConfig(policy="stop")), NaNReward())
    with pytest.raises(RunStopped, match=r"evaluator error .* non-finite reward nan"):
        m.run_items(items(1, 2))
