"""Rollout worker: items -> prompts -> completions -> scored, truncated Trajectories."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from nexrl_runtime.config.schema import RolloutConfig
from nexrl_runtime.data.loader import Item
from nexrl_runtime.errors import ErrorBook, InferenceFailed, item_name
from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams
from nexrl_runtime.rollout.evaluator import EvalResult, Evaluator
from nexrl_runtime.types import Trajectory


@dataclass(frozen=True)
class Truncated:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str


def truncate(prompt_len: int, c: Completion, max_sequence_length: int) -> Truncated:
    """Cut the response so prompt + response fits `max_sequence_length` (pure)."""
    room = max(max_sequence_length - prompt_len, 0)
    if len(c.token_ids) <= room:
        return Truncated(c.token_ids, c.logprobs, c.finish_reason)
    return Truncated(c.token_ids[:room], c.logprobs[:room], "length")


class RolloutWorker:
    """Generates and scores a list of items. Subclass and override `rollout` (or `build_prompt` /
    `score`) for agentic workers; load custom classes with `rollout.worker: file.py:Class`."""

    def __init__(
        self,
        engine: InferenceEngine,
        tokenizer: PreTrainedTokenizerBase,
        evaluator: Evaluator,
        config: RolloutConfig,
        run_id: str,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.evaluator = evaluator
        self.config = config
        self.run_id = run_id
        self._timings: dict[str, float] = {}
        self.errors: ErrorBook | None = None  # set by the controller: evaluator errors cost the sample

    def pop_timings(self) -> dict[str, float]:
        """Seconds spent per phase since the last call (one thread uses a worker at a time)."""
        out, self._timings = self._timings, {}
        return out

    def _add_time(self, key: str, seconds: float) -> None:
        self._timings[key] = self._timings.get(key, 0.0) + seconds

    def build_prompt(self, item: Item) -> list[int]:
        return list(self.tokenizer(str(item.prompt), add_special_tokens=False)["input_ids"])

    def score(self, item: Item, response_ids: list[int]) -> EvalResult:
        text = self.tokenizer.decode(response_ids, skip_special_tokens=True)
        return self.evaluator.evaluate(item.data, text)

    def sampling(self, prompt_lens: list[int], greedy: bool = False) -> SamplingParams:
        s = self.config.sampling
        room = self.config.max_sequence_length - max(prompt_lens)
        if room < 1:
            raise ValueError(
                f"a prompt of {max(prompt_lens)} tokens leaves no room under "
                f"rollout.max_sequence_length={self.config.max_sequence_length}"
            )
        return SamplingParams(
            temperature=0.0 if greedy else s.temperature,
            top_p=1.0 if greedy else s.top_p,
            max_new_tokens=min(s.max_new_tokens, room),
        )

    def rollout(self, items: list[Item], greedy: bool = False) -> list[Trajectory]:
        """One generate call for all items; each trajectory keeps its item's group id."""
        if not items:
            return []
        prompts = [self.build_prompt(it) for it in items]
        params = self.sampling([len(p) for p in prompts], greedy)
        start = time.perf_counter()
        try:
            completions = self.engine.generate(prompts, params)
        except Exception as err:
            raise InferenceFailed(f"{type(err).__name__}: {err}") from err
        self._add_time("generate_seconds", time.perf_counter() - start)
        made = zip(items, prompts, completions, strict=True)
        trajs = [self._trajectory(it, p, cs[0]) for it, p, cs in made]
        return [t for t in trajs if t is not None]

    def _trajectory(self, item: Item, prompt: list[int], c: Completion) -> Trajectory | None:
        """None when the evaluator failed and `errors` lets the run continue without the sample."""
        cut = truncate(len(prompt), c, self.config.max_sequence_length)
        start = time.perf_counter()
        try:
            result = self.score(item, cut.token_ids)
            if not math.isfinite(result.reward):  # a NaN reward would make the group's advantages NaN
                raise ValueError(f"the evaluator returned a non-finite reward {result.reward!r}")
        except Exception as err:
            if self.errors is None:
                raise
            self.errors.record("evaluator", item_name(item), err)  # raises under policy stop
            return None
        finally:
            self._add_time("score_seconds", time.perf_counter() - start)
        if self.errors is not None:
            self.errors.ok()
        n = len(prompt)
        return Trajectory(
            tokens=prompt + cut.token_ids,
            loss_mask=[0] * n + [1] * len(cut.token_ids),
            logprobs=[0.0] * n + list(cut.logprobs),
            reward=float(result.reward),
            group_id=item.group_id,
            run_id=self.run_id,
            policy_version=c.policy_version,
            prompt_length=n,
            finish_reason=cut.finish_reason,
            extra={
                "correct": result.correct,
                "sample_id": item.sample_id,
                **result.metrics,
                "eval_metrics": dict(result.metrics),
            },
        )


WORKERS: dict[str, type[RolloutWorker]] = {"default": RolloutWorker}
