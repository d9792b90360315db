"""Run checkpoints across rank counts, run by each rank under torchrun (gloo, CPU):
`fsdp_ckpt_worker.py DIR`: a sharded trainer takes step 0 and writes `DIR/two` (DCP); then for
`two` and `one` (a single-process checkpoint) a fresh sharded trainer (other initial weights) loads
`DIR/<src>` and takes step 1; rank 0 writes its metrics and final full weights to `DIR/<src>-on-2.pt`."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nexrl_runtime.trainer import GRPOTrainer, Trainer  # noqa: E402
from tests.support.fsdp_worker import batch, config, model  # noqa: E402

# a KL reference (saved and restored too), the old logprobs recomputed, an lr that moves every step
OVERRIDES = {
    "grpo": {"kl_coef": 0.1},
    "recompute_old_logprobs": True,
    "lr_schedule": {"kind": "cosine", "warmup_steps": 2, "decay_steps": 6, "min_lr_ratio": 0.1},
}


def trainer_config():
    return config(OVERRIDES)


def first_step(make, folder: Path) -> None:
    """Step 0 from seed 0, then the trainer's part of a run checkpoint into `folder`."""
    trainer: Trainer = make(model(), trainer_config())
    trainer.train_step(batch(0))
    assert trainer.save_checkpoint(folder) == 1


def resumed_step(make, folder: Path) -> dict:
    """A trainer of other initial weights loads `folder` and takes step 1."""
    trainer: Trainer = make(model(seed=9), trainer_config())
    assert trainer.load_checkpoint(folder) == 1
    metrics = trainer.train_step(batch(1))
    return {"metrics": metrics, "weights": trainer.state_dict()}


def main(out: str) -> None:
    from nexrl_runtime.trainer.fsdp import RankGroup, build_sharded_trainer

    torch.set_num_threads(1)
    ranks = RankGroup.init(device="cpu")
    root = Path(out)

    def make(m, c):
        return build_sharded_trainer(GRPOTrainer, m, c, 0, ranks)

    if ranks.is_main:
        (root / "two").mkdir(parents=True, exist_ok=True)
    ranks.barrier()
    first_step(make, root / "two")
    for src in ("two", "one"):
        result = resumed_step(make, root / src)
        if ranks.is_main:
            torch.save(result, root / f"{src}-on-2.pt")
    ranks.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
