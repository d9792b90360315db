"""Supervised warm start: a few cross-entropy steps on (prompt, answer) before RL."""

from __future__ import annotations

from collections.abc import Callable

from transformers import PreTrainedTokenizerBase

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import OptimConfig, TrainerConfig, WarmStartConfig
from nexrl_runtime.data.loader import DataLoader, Item
from nexrl_runtime.trainer.sft import SFTTrainer
from nexrl_runtime.types import Batch, Trajectory


def sft_trajectory(item: Item, tokenizer: PreTrainedTokenizerBase, answer_key: str) -> Trajectory:
    """Prompt tokens (not trained) + answer tokens + eos (trained)."""
    if answer_key not in item.data:
        raise ConfigError(f"warm_start.answer_key: {answer_key!r} is not a key of data item {item.group_id} "
                          f"(its keys: {sorted(item.data)})")
    prompt = tokenizer(str(item.prompt), add_special_tokens=False)["input_ids"]
    answer = [
        *tokenizer(str(item.data[answer_key]), add_special_tokens=False)["input_ids"],
        tokenizer.eos_token_id,
    ]
    return Trajectory(
        tokens=prompt + answer,
        loss_mask=[0] * len(prompt) + [1] * len(answer),
        logprobs=[0.0] * (len(prompt) + len(answer)),
        reward=0.0,
        group_id=item.group_id,
        run_id="warm-start",
        policy_version=0,
        prompt_length=len(prompt),
    )


def warm_start(
    model,
    tokenizer: PreTrainedTokenizerBase,
    loader: DataLoader,
    config: WarmStartConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> None:
    """Run `config.steps` SFT steps on batches drawn from `loader` (a loader of its own)."""
    trainer = SFTTrainer(
        model, TrainerConfig(type="sft", optim=OptimConfig(lr=config.lr)), tokenizer.pad_token_id
    )
    for step in range(1, config.steps + 1):
        items = loader.next_batch()
        batch = Batch([sft_trajectory(it, tokenizer, config.answer_key) for it in items], step=step)
        metrics = trainer.train_step(batch)
        if on_step is not None:
            on_step(step, metrics)
