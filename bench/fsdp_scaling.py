"""FSDP2 trainer rank group on CPU: per-rank training state (params + grads + AdamW state) and step time
with 1 and 2 ranks, and the weight gap between them, for a ~29M-parameter GPT-2 (gloo, torchrun).

    python bench/fsdp_scaling.py [--steps 3]

Last line: `fsdp: ranks=2 state_bytes_ratio=<2-rank/1-rank> max_weight_diff=<y> step_s_1=<a> step_s_2=<b>`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    conf = GPT2Config(vocab_size=8192, n_positions=128, n_embd=512, n_layer=8, n_head=8,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    return GPT2LMHeadModel(conf)


def batch(step: int):
    from nexrl_runtime.types import Batch, Trajectory

    rng = random.Random(step)
    trajs = []
    for i in range(8):
        n = rng.randint(32, 96)
        toks = [rng.randrange(8192) for _ in range(n)]
        trajs.append(Trajectory(toks, [0] * 8 + [1] * (n - 8), [0.0] * n, 0.0, f"g{i}", "r", 0, 8))
    return Batch(trajs)


def local_bytes(t: torch.Tensor) -> int:
    from torch.distributed.tensor import DTensor

    t = t.to_local() if isinstance(t, DTensor) else t
    return t.numel() * t.element_size()


def worker(out: str, steps: int) -> None:
    from nexrl_runtime.config.schema import TrainerConfig
    from nexrl_runtime.trainer import SFTTrainer
    from nexrl_runtime.trainer.fsdp import RankGroup, build_sharded_trainer

    torch.set_num_threads(1)
    ranks = RankGroup.init(device="cpu")
    cfg = TrainerConfig(type="sft", micro_batch_size=2)
    trainer = build_sharded_trainer(SFTTrainer, model(), cfg, 0, ranks)
    times, peak = [], 0
    for step in range(steps):
        ranks.barrier()
        start = time.perf_counter()
        b = batch(step)
        trainer.model.train()
        from nexrl_runtime.trainer.collate import collate

        data = collate(b.trajectories, 0)
        trainer.backward(data)
        grads = sum(local_bytes(p.grad) for p in trainer.params if p.grad is not None)
        trainer._clip_and_step()
        times.append(time.perf_counter() - start)
        params = sum(local_bytes(p) for p in trainer.params)
        opt = sum(local_bytes(v) for s in trainer.optimizer.state.values() for v in s.values() if v.dim())
        peak = max(peak, params + grads + opt)
    peaks = ranks.sum([peak])  # every rank's peak (max below)
    worst = ranks.max(peak)
    weights = trainer.state_dict()
    if ranks.is_main:
        torch.save(weights, Path(out) / "weights.pt")
        n = sum(v.numel() for k, v in weights.items() if k != "lm_head.weight")
        (Path(out) / "result.json").write_text(json.dumps(
            {"params": n, "peak_state_bytes": worst, "mean_peak": peaks[0] / ranks.world_size,
             "step_s": sorted(times[1:] or times)[len(times[1:] or times) // 2]}))  # fmt: skip
    ranks.barrier()


def run(nproc: int, steps: int) -> tuple[dict, dict]:
    out = tempfile.mkdtemp(prefix=f"fsdp{nproc}.")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={port}",
           __file__, "--worker", out, "--steps", str(steps)]  # fmt: skip
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    return json.loads((Path(out) / "result.json").read_text()), torch.load(Path(out) / "weights.pt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps)
        return
    one, w1 = run(1, args.steps)
    two, w2 = run(2, args.steps)
    diff = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    ratio = two["peak_state_bytes"] / one["peak_state_bytes"]
    mib = [r["peak_state_bytes"] / 2**20 for r in (one, two)]
    print(f"params: {one['params'] / 1e6:.1f}M; per-rank peak param+grad+AdamW bytes: "
          f"1 rank {mib[0]:.1f} MiB, 2 ranks {mib[1]:.1f} MiB")  # fmt: skip
    print(f"fsdp: ranks=2 state_bytes_ratio={ratio:.3f} max_weight_diff={diff:.2e} "
          f"step_s_1={one['step_s']:.3f} step_s_2={two['step_s']:.3f}")


if __name__ == "__main__":
    main()
