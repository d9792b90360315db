"""Agentic rollouts: multi-turn conversations with tools, kept as token ids (docs/agents.md)."""

from nexrl_runtime.rollout.agent.config import AgentConfig, ToolSpec, load_agent_config
from nexrl_runtime.rollout.agent.parsing import ParsedTurn, ToolCall, parse_hermes, parse_plain
from nexrl_runtime.rollout.agent.tools import ToolBox, ToolOutcome
from nexrl_runtime.rollout.agent.trace import AgentEvaluator, AgentTrace, Turn, to_trajectory
from nexrl_runtime.rollout.agent.worker import AgentWorker

__all__ = [
    "AgentConfig",
    "AgentEvaluator",
    "AgentTrace",
    "AgentWorker",
    "ParsedTurn",
    "ToolBox",
    "ToolCall",
    "ToolOutcome",
    "ToolSpec",
    "Turn",
    "load_agent_config",
    "parse_hermes",
    "parse_plain",
    "to_trajectory",
]
