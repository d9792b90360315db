"""The clock both sides of trl_compare run against: RL wall time with evaluation excluded, held-out
evaluation every K steps, the accuracy target, and the caps on steps and seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from recipe_bench import mean_median

Evaluate = Callable[[Mapping[str, torch.Tensor]], float]


@dataclass
class RaceResult:
    """What one side achieved; seconds are RL wall time with evaluation taken out."""

    name: str
    setup_seconds: float = 0.0
    steps: int = 0
    rl_seconds: float = 0.0
    eval_seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, accuracy, rl seconds)
    reached: tuple[int, float] | None = None  # (step, rl seconds) at the first evaluation >= target
    stop_reason: str = "not started"

    @property
    def final_accuracy(self) -> float:
        return self.curve[-1][1] if self.curve else float("nan")

    @property
    def per_step(self) -> tuple[float, float]:
        """Mean and median seconds per step."""
        return mean_median(self.step_seconds)


class Race:
    """Call `start()` as the RL loop starts and `step_end(step, state)` as each step ends (weights
    updated); it evaluates every `every` steps (and at a cap) and says when to stop."""

    def __init__(
        self,
        name: str,
        evaluate: Evaluate,
        target: float,
        every: int,
        max_steps: int,
        max_seconds: float,
    ) -> None:
        self.result = RaceResult(name)
        self.evaluate = evaluate
        self.target = target
        self.every = every
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self._t0 = self._last = 0.0

    def start(self) -> None:
        self._t0 = self._last = time.perf_counter()
        self.result.stop_reason = "running"

    def step_end(self, step: int, state: Callable[[], Mapping[str, torch.Tensor]]) -> bool:
        """Record the step; evaluate when due; True when the run should stop."""
        r = self.result
        now = time.perf_counter()
        r.step_seconds.append(now - self._last)
        r.steps, r.rl_seconds = step, now - self._t0 - r.eval_seconds
        capped = step >= self.max_steps or r.rl_seconds >= self.max_seconds
        if step % self.every == 0 or capped:
            acc = self.evaluate(state())
            r.eval_seconds += time.perf_counter() - now
            r.curve.append((step, acc, r.rl_seconds))
            if acc >= self.target and r.reached is None:
                r.reached = (step, r.rl_seconds)
        if r.reached is not None:
            r.stop_reason = f"target {self.target} reached"
        elif capped:
            r.stop_reason = (
                f"cap: {step} steps" if step >= self.max_steps else f"cap: {self.max_seconds:.0f} s"
            )
        self._last = time.perf_counter()  # the next step's time starts after this evaluation
        return r.reached is not None or capped
