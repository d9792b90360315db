"""Agent rollouts: conversations per second and engine idle fraction for 64 concurrent
conversations whose tool sleeps 50 ms, turns interleaved vs one conversation at a time.

Each conversation is the calculator agent's (a `calc` call, its result, the answer) through the
real AgentWorker (scheduler, tool runner, renderer, parser, trajectories). The engine is simulated
with a fixed cost model so the figures isolate the rollout loop from model speed: a generate call
takes `step_ms + row_ms * batch` per decoded token (a GPU's batched decode), under a lock like the
in-process engine (`batch` scheduling); `--engine async` models an HTTP server that batches
concurrent requests on its own (`concurrent` scheduling, one request per turn). Each mode runs
twice and reports the second run. Engine idle = 1 - (time the engine had work) / wall time.

    python bench/agent_rollouts.py [--conversations 64] [--tool-ms 50] [--engine locked|async]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import yaml

from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.data.loader import Item
from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams
from nexrl_runtime.models.factory import char_tokenizer
from nexrl_runtime.rollout import EvalResult, Evaluator
from nexrl_runtime.rollout.agent import AgentWorker, load_agent_config

TOOL = """
import time

def calc(expression, ms={ms}):
    time.sleep(ms / 1000)
    a, b = expression.split("*")
    return str(int(a) * int(b))
"""


class SimEngine(InferenceEngine):
    """Scripted turns (call, then copy the result) at a modelled cost; counts busy time itself."""

    def __init__(self, tok, step_ms: float, row_ms: float) -> None:
        self.tok, self.step_ms, self.row_ms = tok, step_ms, row_ms
        self.lock = threading.Lock()

    def _turn(self, prompt: list[int]) -> list[int]:
        text = self.tok.decode(prompt)
        reply = text.rsplit("=", 1)[1].rstrip(";") if text.endswith(";") else f"[calc:{text.rstrip('=')}]"
        return [*self.tok(reply, add_special_tokens=False)["input_ids"], self.tok.eos_token_id]

    def _completions(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        outs = []
        for p in prompts:
            ids = self._turn(p)
            stop = next((i + 1 for i, t in enumerate(ids) if t in params.stop_token_ids), len(ids))
            ids = ids[: min(stop, params.max_new_tokens)]
            outs.append([Completion(p, ids, [-0.1] * len(ids), "stop", 0)])
        return outs

    def cost(self, outs: list[list[Completion]]) -> float:
        steps = max(len(o[0].token_ids) for o in outs)
        return steps * (self.step_ms + self.row_ms * len(outs)) / 1000

    def generate(self, prompts, params):
        with self.lock:
            outs = self._completions(prompts, params)
            time.sleep(self.cost(outs))
            return outs

    def load_weights(self, state_dict, version):
        self.policy_version = version


class AsyncSimEngine(SimEngine):
    """A server that batches the requests in flight: a request pays its tokens at the batched
    per-token cost of the requests running beside it when it starts."""

    in_flight = 0

    async def agenerate(self, prompts, params):
        outs = self._completions(prompts, params)
        steps = max(len(o[0].token_ids) for o in outs)
        self.in_flight += len(prompts)
        try:
            await asyncio.sleep(steps * (self.step_ms + self.row_ms * self.in_flight) / 1000)
        finally:
            self.in_flight -= len(prompts)
        return outs


class Exact(Evaluator):
    def evaluate(self, item, response):
        return EvalResult(float(response == item["answer"]), response == item["answer"])


def worker(root: Path, engine: InferenceEngine, tok, concurrent: int) -> AgentWorker:
    cfg = NexRLConfig.model_validate({
        "recipe_dir": str(root), "data": {"path": "x"},
        "rollout": {"worker": "agent", "evaluator": "x:Y", "max_sequence_length": 64,
                    "sampling": {"max_new_tokens": 16}},
    })  # fmt: skip
    agent = load_agent_config(cfg.rollout.agent_config, root)
    agent.concurrency.max_conversations = concurrent
    return AgentWorker(engine, tok, Exact(), cfg.rollout, "bench", agent=agent)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations", type=int, default=64)
    ap.add_argument("--tool-ms", type=float, default=50.0)
    ap.add_argument("--step-ms", type=float, default=1.0, help="engine: ms per decoded token")
    ap.add_argument("--row-ms", type=float, default=0.02, help="engine: extra ms per token per batch row")
    ap.add_argument("--engine", choices=["locked", "async"], default="locked")
    args = ap.parse_args()
    tok = char_tokenizer("0123456789*=[]:;calc")
    numbers = range(10, 10 + args.conversations)
    items = [Item({"answer": str(a * 37)}, f"{a}*37=", f"g{a}", 0, 0, 0, a) for a in numbers]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "agent_workspace").mkdir()
        (root / "agent_workspace" / "tools.py").write_text(TOOL.format(ms=args.tool_ms))
        expression = {"expression": {"type": "string"}}
        schema = {"type": "object", "properties": expression, "required": ["expression"]}
        config = {
            "tools": [{"name": "calc", "entry_point": "agent_workspace/tools.py:calc", "parameters": schema}],
            "stop": {"tokens": ["]"]},
            "format": {"prompt": "plain", "tool_calls": "plain"},
        }
        (root / "agent_workspace" / "agent_config.yaml").write_text(yaml.safe_dump(config))
        cls = AsyncSimEngine if args.engine == "async" else SimEngine
        print(f"{args.conversations} conversations, tool {args.tool_ms:.0f} ms, engine {args.engine} "
              f"({args.step_ms} ms/token + {args.row_ms} ms/token/row)")  # fmt: skip
        for name, concurrent in [("interleaved", args.conversations), ("one at a time", 1)]:
            w = worker(root, cls(tok, args.step_ms, args.row_ms), tok, concurrent)
            w.rollout(items)  # warm-up: the tool threads are started once, then reused
            trajs = w.rollout(items)
            s = w.last_stats
            right, wall = sum(t.reward for t in trajs), s["wall_seconds"]
            print(f"  {name:>13}: {len(trajs) / wall:8.1f} conversations/s, engine idle "
                  f"{1 - s['busy_seconds'] / wall:.1%}, {s['engine_calls']:.0f} engine calls for "
                  f"{s['turns']:.0f} turns, {wall:.2f} s, {right:.0f}/{len(trajs)} right")  # fmt: skip


if __name__ == "__main__":
    main()
