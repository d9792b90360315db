"""Rollout: workers that turn data items into scored trajectories, and the evaluator interface."""

from nexrl_runtime.rollout.agent.worker import AgentWorker
from nexrl_runtime.rollout.evaluator import EvalResult, Evaluator
from nexrl_runtime.rollout.worker import WORKERS, RolloutWorker

# registered here, not in worker.py: the agent worker subclasses RolloutWorker (no import cycle),
# and importing anything of nexrl_runtime.rollout runs this first
WORKERS["agent"] = AgentWorker

__all__ = ["WORKERS", "EvalResult", "Evaluator", "RolloutWorker"]
