"""The GSM8K agent recipe (GPU-sized): it loads with its example job's overrides and cluster section,
its calculator evaluates arithmetic and nothing else, and a Hermes conversation through a chat
template reaches the GSM8K reward (a scripted policy stands in for the model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from nexrl_operator.api import NexRLJob
from nexrl_operator.builders import build_children
from nexrl_operator.builders.configmap import CLUSTER_KEY, OVERRIDES_KEY
from scripted_policy import ScriptedEngine, chat_tokenizer

from nexrl_runtime.config import load_config
from nexrl_runtime.data.loader import Item
from nexrl_runtime.registry import load_object, resolve_class
from nexrl_runtime.rollout import WORKERS, Evaluator, RolloutWorker
from nexrl_runtime.rollout.agent import AgentWorker

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipe" / "gsm8k_agent" / "gsm8k_agent.yaml"
EXAMPLE = REPO / "examples" / "nexrljob-qwen2.5-1.5b-gsm8k-agent.yaml"
calculate = load_object("agent_workspace/tools.py:calculate", RECIPE.parent)


def test_the_recipe_loads_with_its_example_jobs_inputs(tmp_path: Path) -> None:
    job = NexRLJob.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    assert job.spec.recipe == "/app/" + str(RECIPE.relative_to(REPO))
    children = build_children(job, name="j", namespace="team-a", uid="u")
    (configmap,) = [c for c in children if c["kind"] == "ConfigMap"]
    (tmp_path / "cluster.yaml").write_text(configmap["data"][CLUSTER_KEY])
    overrides = configmap["data"][OVERRIDES_KEY].splitlines()
    cfg = load_config(RECIPE, overrides, cluster_file=tmp_path / "cluster.yaml")
    assert cfg.rollout.worker == "agent" and cfg.inference.engine == "openai"
    assert cfg.cluster.inference.base_urls  # the job's vLLM replicas
    assert cfg.trainer.optim.lr == 1e-6 and cfg.data.path.endswith("/train.jsonl")  # from recipe/gsm8k
    gsm8k = load_object("evaluator.py:GSM8KEvaluator", REPO / "recipe" / "gsm8k")
    assert resolve_class(cfg.rollout.evaluator, {}, Evaluator, cfg.recipe_dir) is gsm8k
    assert resolve_class(cfg.rollout.worker, WORKERS, RolloutWorker, cfg.recipe_dir) is AgentWorker


def test_the_calculator_evaluates_arithmetic_only() -> None:
    assert calculate("(48 + 24) / 2 * 1.5") == "54"
    assert calculate("1,200 * 2 - 7 // 2 + 2^3 % 5") == "2400"
    assert calculate("10 / 4") == "2.5" and calculate("-3 * -2") == "6"
    for bad in ("__import__('os')", "x + 1", "2 ** 100", "[1]"):
        with pytest.raises(ValueError):
            calculate(bad)


def test_a_hermes_conversation_reaches_the_gsm8k_reward() -> None:
    cfg = load_config(RECIPE, ["rollout.max_sequence_length=4000"])
    tok = chat_tokenizer()

    def script(context: str) -> str:
        if "<tool_response>" in context:
            return "So she sold \\boxed{" + context.rsplit("<tool_response>", 1)[1].split("<")[0] + "}"
        call = '{"name": "calc", "arguments": {"expression": "48 + 48/2"}}'
        return f"May is half: <tool_call>{call}</tool_call>"

    evaluator = resolve_class(cfg.rollout.evaluator, {}, Evaluator, cfg.recipe_dir)()
    worker = AgentWorker(ScriptedEngine(tok, script), tok, evaluator, cfg.rollout, "run")
    row = {"prompt": "(pre-rendered)", "question": "48 clips in April, half as many in May?", "answer": "72"}
    [traj] = worker.rollout([Item(row, row["prompt"], "g", 0, 0, 0, 0)])
    text = tok.decode(traj.tokens, skip_special_tokens=False)
    assert "48 clips in April, half as many in May?\nPlease reason step by step" in text
    assert '"name": "calc"' in text.split("<|im_start|>user")[0]  # the schema, in the system turn
    assert "<tool_response>72</tool_response>" in text and text.endswith("\\boxed{72}<|im_end|>")
    assert traj.reward == 1.0 and traj.extra["agent_tool_calls"] == 1.0
