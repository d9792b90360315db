"""Rollout: workers that turn data items into scored trajectories, and the evaluator interface."""

from nexrl_runtime.rollout.evaluator import EvalResult, Evaluator
from nexrl_runtime.rollout.worker import WORKERS, RolloutWorker

__all__ = ["WORKERS", "EvalResult", "Evaluator", "RolloutWorker"]
