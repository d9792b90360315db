"""Cases for the trainer rank group, run the same way by one process (the reference) and by each rank
under torchrun (`python -m torch.distributed.run --nproc_per_node N fsdp_worker.py OUT`): rank 0
writes every case's per-step metrics and final full weights to `OUT/<case>.pt`."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from nexrl_runtime.config.schema import TrainerConfig  # noqa: E402
from nexrl_runtime.trainer import GRPOTrainer, SFTTrainer, Trainer  # noqa: E402
from nexrl_runtime.types import Batch, Trajectory  # noqa: E402

VOCAB = 24
STEPS = 2  # train_step calls per case

# name -> (trainer class, TrainerConfig overrides); every case has mini-batches, micro-batches and
# 2 epochs over a batch of uneven lengths (the token split gives the ranks different row counts).
CASES: dict[str, tuple[type[Trainer], dict]] = {
    "token-mean": (GRPOTrainer, {"grpo": {"loss_agg": "token-mean"}}),
    "seq-mean-token-mean": (GRPOTrainer, {"grpo": {"loss_agg": "seq-mean-token-mean"}}),
    "seq-mean-token-sum": (GRPOTrainer, {"grpo": {"loss_agg": "seq-mean-token-sum"}}),
    "kl-entropy": (GRPOTrainer, {"grpo": {"kl_coef": 0.1, "entropy_coef": 0.01}, "micro_batch_size": 1}),
    "sft": (SFTTrainer, {}),
    # the batch's logprobs are random, so the recompute really replaces them; the lr moves every step
    "recompute-cosine": (
        GRPOTrainer,
        {
            "recompute_old_logprobs": True,
            "lr_schedule": {"kind": "cosine", "warmup_steps": 2, "decay_steps": 6, "min_lr_ratio": 0.1},
        },
    ),
}
RESUMED = "recompute-cosine"  # also run as `<case>-resumed`: saved and loaded between the steps


def model(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    conf = GPT2Config(
        vocab_size=VOCAB,
        n_positions=48,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(conf)


def batch(step: int) -> Batch:
    """14 trajectories, 7 groups of 2, lengths 5..40 (very uneven)."""
    rng = random.Random(100 + step)
    trajs = []
    for i in range(14):
        n = rng.choice([5, 6, 9, 14, 22, 31, 40])
        prompt = rng.randint(2, 4)
        tokens = [rng.randrange(3, VOCAB) for _ in range(n)]
        mask = [0] * prompt + [1] * (n - prompt)
        logprobs = [0.0] * prompt + [-rng.uniform(1.0, 4.0) for _ in range(n - prompt)]
        trajs.append(
            Trajectory(
                tokens, mask, logprobs, float(rng.random() > 0.5) + 0.1 * i, f"g{i // 2}", "r", 0, prompt
            )
        )
    return Batch(trajs, step=step)


def config(overrides: dict) -> TrainerConfig:
    base = {
        "optim": {"lr": 1e-3, "grad_clip": 0.5},
        "mini_batch_size": 5,
        "micro_batch_size": 2,
        "ppo_epochs": 2,
    }
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainerConfig.model_validate(base)


def run(name: str, make, scratch: Path | None = None) -> dict:
    """`make(cls, model, config)` builds the trainer; returns per-step metrics and the final weights.
    With `scratch`, the trainer is saved after the first step and a new one (other initial weights)
    loads it and takes the rest."""
    cls, overrides = CASES[name]
    trainer = make(cls, model(), config(overrides))
    metrics = []
    for step in range(STEPS):
        if scratch is not None and step == 1:
            trainer.save(scratch / f"{name}.ckpt")
            trainer = make(cls, model(seed=9), config(overrides))
            trainer.load(scratch / f"{name}.ckpt")
        metrics.append(trainer.train_step(batch(step)))
    return {"metrics": metrics, "weights": trainer.state_dict()}


def main(out: str) -> None:
    from nexrl_runtime.trainer.fsdp import RankGroup, build_sharded_trainer

    torch.set_num_threads(1)
    ranks = RankGroup.init(device="cpu")
    for name in CASES:
        result = run(name, lambda cls, m, c: build_sharded_trainer(cls, m, c, 0, ranks))
        if ranks.is_main:
            torch.save(result, Path(out) / f"{name}.pt")
    result = run(RESUMED, lambda cls, m, c: build_sharded_trainer(cls, m, c, 0, ranks), Path(out))
    if ranks.is_main:
        torch.save(result, Path(out) / f"{RESUMED}-resumed.pt")
    ranks.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
