"""Builders shared by the agent worker tests: an agent recipe folder written to tmp_path (config,
tools, prompt file), items, and workers over a scripted policy."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import yaml

from nexrl_runtime.config.schema import NexRLConfig, RolloutConfig
from nexrl_runtime.data.loader import Item
from nexrl_runtime.rollout.agent import AgentEvaluator, AgentTrace, AgentWorker
from nexrl_runtime.rollout.evaluator import EvalResult

TOOLS_PY = '''
import asyncio
import threading
import time

CALLS = []
BARRIER = threading.Barrier(2, timeout=10)


def calc(expression):
    CALLS.append(expression)
    a, b = expression.split("*")
    return str(int(a) * int(b))


def boom(expression):
    raise ZeroDivisionError("no " + expression)


def slow(expression):
    time.sleep(2.0)
    return "late"


async def aslow(expression):
    await asyncio.sleep(5.0)
    return "late"


GATE = threading.Event()


def wait_gate(expression):
    return "opened" if GATE.wait(timeout=10) else "still shut"


def open_gate(expression):
    GATE.set()
    return "done"


def meet(expression):
    BARRIER.wait()  # both calls of a turn must be running at once to get past
    return expression
'''

CALC_SCHEMA = {
    "type": "object",
    "properties": {"expression": {"type": "string"}},
    "required": ["expression"],
}


def tool(name: str, fn: str, timeout_s: float = 5.0) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{name} a product like 12*34",
        "parameters": CALC_SCHEMA,
        "entry_point": f"agent_workspace/tools.py:{fn}",
        "timeout_s": timeout_s,
    }


def write_recipe(root: Path, **agent: Any) -> Path:
    """A recipe folder with agent_workspace/{agent_config.yaml,tools.py}; `agent` overrides keys."""
    ws = root / "agent_workspace"
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "tools.py").write_text(TOOLS_PY)
    config = {
        "tools": [tool("calc", "calc"), tool("boom", "boom"), tool("slow", "slow", 0.2),
                  tool("aslow", "aslow", 0.2), tool("meet", "meet"),
                  tool("wait", "wait_gate", 3.0), tool("open", "open_gate")],
        "max_turns": 3,
        "stop": {"tokens": ["]"]},
        **agent,
    }  # fmt: skip
    (ws / "agent_config.yaml").write_text(yaml.safe_dump(config))
    return root


def rollout_config(root: Path, max_len: int = 200, max_new: int = 60) -> RolloutConfig:
    cfg = NexRLConfig.model_validate(
        {
            "recipe_dir": str(root),
            "data": {"path": "x.jsonl"},
            "rollout": {
                "worker": "agent",
                "evaluator": "e.py:E",
                "max_sequence_length": max_len,
                "sampling": {"max_new_tokens": max_new},
            },
        }
    )
    return cfg.rollout


def item(prompt: str, answer: str, group: str = "g0", **data: Any) -> Item:
    return Item({"prompt": prompt, "answer": answer, **data}, prompt, group, 0, 0, 0, 0)


class ProductEvaluator(AgentEvaluator):
    """reward 1 for the right product; records the traces it saw."""

    def __init__(self) -> None:
        self.traces: list[AgentTrace] = []
        self.lock = threading.Lock()

    def evaluate_trace(self, item: dict[str, Any], trace: AgentTrace) -> EvalResult:
        with self.lock:
            self.traces.append(trace)
        right = trace.answer is not None and trace.answer.strip() == item["answer"]
        return EvalResult(float(right), right, {"calls_seen": float(len(trace.calls))})


def make_worker(engine, tok, root: Path, evaluator=None, **rollout: int) -> AgentWorker:
    return AgentWorker(engine, tok, evaluator or ProductEvaluator(), rollout_config(root, **rollout), "run")
