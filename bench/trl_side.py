"""TRL's GRPOTrainer set up from the same recipe as NexRL. Imported only under .venv-bench: TRL is
never a NexRL dependency. Every recipe setting that TRL can express is carried over; what cannot be
is listed by `mismatches` (and in README.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from datasets import Dataset
from race import Race, RaceResult
from recipe_bench import State, load_evaluator, seeded_policy
from transformers import PrinterCallback, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from nexrl_runtime.config import NexRLConfig
from nexrl_runtime.data.loader import DataLoader
from nexrl_runtime.rollout.evaluator import Evaluator

LOSS_TYPE = {"token-mean": "dapo", "seq-mean-token-mean": "grpo", "seq-mean-token-sum": "dr_grpo"}


def mismatches(cfg: NexRLConfig) -> list[str]:
    """What differs from the NexRL run even after the mapping; exits on recipes TRL cannot mirror."""
    t = cfg.trainer
    if cfg.train_batch_size != cfg.data.batch_size * cfg.data.rollout_repeat_n:
        raise SystemExit("pool.batch_size differs from data.batch_size * rollout_repeat_n: not mapped to TRL")
    if t.mini_batch_size not in (None, cfg.train_batch_size):
        raise SystemExit("trainer.mini_batch_size (several optimizer steps per batch) is not mapped to TRL")
    if t.type != "grpo":
        raise SystemExit(f"trainer.type={t.type}: only the grpo trainer has a TRL counterpart")
    notes = [
        "sampling: different random streams (NexRL's engine generator vs HF generate), so different samples",
        "generation: NexRL samples on its own engine copy, loaded each step (weight sync); "
        "TRL generates with HF generate on the training model itself (nothing to sync)",
        "old logprobs: NexRL uses the sampler's logprobs (ratio ~1 up to numerics); "
        "TRL recomputes them with the training forward (ratio exactly 1 on the first pass)",
        "advantages: std + 1e-6 (NexRL) vs std + 1e-4 (TRL) in the denominator",
    ]
    if t.grpo.loss_agg == "seq-mean-token-sum":
        notes.append(
            "loss: TRL dr_grpo divides the token sum by max_completion_length too (a constant factor)"
        )
    if t.grpo.kl_coef > 0 and t.grpo.kl_estimator != "k3":
        notes.append(f"KL: TRL uses the k3 estimator; the recipe asks {t.grpo.kl_estimator}")
    return notes


def completion_length(cfg: NexRLConfig, rows: list[dict[str, Any]], tok: Any) -> int:
    """NexRL caps a response at max_new_tokens and at max_sequence_length - prompt length."""
    longest = max(len(tok(str(r[cfg.data.prompt_key]), add_special_tokens=False)["input_ids"]) for r in rows)
    return min(cfg.rollout.sampling.max_new_tokens, cfg.rollout.max_sequence_length - longest)


def grpo_args(cfg: NexRLConfig, max_steps: int, out_dir: str, max_completion: int) -> GRPOConfig:
    """The recipe's hyperparameters in TRL's terms (plus the settings TRL needs on CPU, offline)."""
    g, o, s = cfg.trainer.grpo, cfg.trainer.optim, cfg.rollout.sampling
    return GRPOConfig(
        output_dir=out_dir,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,  # TRL's default is True; NexRL does not checkpoint
        max_steps=max_steps,
        per_device_train_batch_size=cfg.train_batch_size,
        gradient_accumulation_steps=1,
        num_generations=cfg.data.rollout_repeat_n,
        num_iterations=cfg.trainer.ppo_epochs,
        max_completion_length=max_completion,
        temperature=s.temperature,
        top_p=s.top_p,
        learning_rate=o.lr,
        lr_scheduler_type="constant",
        weight_decay=o.weight_decay,
        adam_beta1=o.betas[0],
        adam_beta2=o.betas[1],
        optim="adamw_torch",
        max_grad_norm=o.grad_clip or 0.0,
        beta=g.kl_coef,
        epsilon=g.clip_low,
        epsilon_high=g.clip_high,
        scale_rewards=g.scale_rewards,
        loss_type=LOSS_TYPE[g.loss_agg],
        entropy_coef=g.entropy_coef,
        shuffle_dataset=False,  # the rows come in NexRL's loader order already
        seed=cfg.seed,
        logging_steps=1,  # NexRL logs every step too
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def ordered_rows(cfg: NexRLConfig, steps: int) -> list[dict[str, Any]]:
    """The source rows NexRL's RL loader visits in its first `steps` batches, in order."""
    loader = DataLoader(cfg.data.model_copy(update={"rollout_repeat_n": 1}), cfg.recipe_dir)
    return [it.data for _ in range(steps) for it in loader.next_batch()]


def recipe_reward(evaluator: Evaluator, prompt_key: str, columns: list[str]) -> Callable[..., list[float]]:
    """A TRL reward function that scores each completion with the recipe's evaluator."""

    def recipe_evaluator(prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        return [
            evaluator.evaluate({prompt_key: p, **{c: kw[c][i] for c in columns}}, text).reward
            for i, (p, text) in enumerate(zip(prompts, completions, strict=True))
        ]

    return recipe_evaluator


class RaceCallback(TrainerCallback):
    """Reports each finished optimizer step to the race and stops training when it says so."""

    def __init__(self, race: Race) -> None:
        self.race = race

    def on_step_end(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        if self.race.step_end(state.global_step, model.state_dict):
            control.should_training_stop = True
        return control


def run_trl(cfg: NexRLConfig, warm: State, race: Race, out_dir: str) -> RaceResult:
    """Build GRPOTrainer from the warm-started weights and train until the race says stop."""
    start = time.perf_counter()
    model, tok = seeded_policy(cfg)
    model.load_state_dict(warm)
    rows = ordered_rows(cfg, race.max_steps)
    pk = cfg.data.prompt_key
    columns = [c for c in rows[0] if c != pk]
    data = Dataset.from_list([{"prompt": r[pk], **{c: r[c] for c in columns}} for r in rows])
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=recipe_reward(load_evaluator(cfg), pk, columns),
        args=grpo_args(cfg, race.max_steps, out_dir, completion_length(cfg, rows, tok)),
        train_dataset=data,
        processing_class=tok,
        callbacks=[RaceCallback(race)],
    )
    trainer.remove_callback(PrinterCallback)  # the per-step log dicts would bury the report
    race.result.setup_seconds = time.perf_counter() - start
    race.start()
    trainer.train()
    return race.result
