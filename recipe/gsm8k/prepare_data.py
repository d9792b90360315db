"""Convert GSM8K files you downloaded (HF parquet or the original JSONL; columns `question` and
`answer`) into the recipe's rows: a chat-style `prompt` and the reference number as `answer`.

    python recipe/gsm8k/prepare_data.py --train train.parquet --test test.parquet --out /data/gsm8k

The prompt is Qwen's ChatML by default; `--tokenizer DIR` renders it with a local model's own chat
template instead. No network: reads and writes local files only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from nexrl_runtime.data.readers import load_items
from nexrl_runtime.registry import load_object

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
SYSTEM = "You are a helpful assistant."
Render = Callable[[list[dict[str, str]]], str]
final_answer = cast(  # the evaluator's parser, so data and reward read answers alike
    Callable[[str], tuple[str | None, bool]], load_object("evaluator.py:final_answer", Path(__file__).parent)
)


def messages(question: str) -> list[dict[str, str]]:
    """The conversation the policy answers: a system turn and the question with the instruction."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{question.strip()}\n{INSTRUCTION}"}]


def chatml(conversation: list[dict[str, str]]) -> str:
    """ChatML (Qwen2.5's template), ending with the assistant's turn opened."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation)
    return turns + "<|im_start|>assistant\n"


def tokenizer_template(path: str) -> Render:
    """A local model's chat template (no hub access)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return lambda conversation: tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )


def convert(row: dict[str, Any], render: Render) -> dict[str, str]:
    """One GSM8K row -> {prompt, answer (the number after ####), question, solution}."""
    number, marked = final_answer(row["answer"])
    if number is None or not marked:
        raise ValueError(f"no '#### N' final answer in the solution of: {row['question'][:80]!r}")
    return {"prompt": render(messages(row["question"])), "answer": number,
            "question": row["question"], "solution": row["answer"]}


def convert_file(src: Path, dst: Path, render: Render, limit: int | None = None) -> int:
    """Convert one file to JSONL; returns the number of rows written."""
    rows = [convert(row, render) for row in load_items(src, limit=limit)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, help="GSM8K train split (.parquet or .jsonl)")
    ap.add_argument("--test", type=Path, help="GSM8K test split (.parquet or .jsonl)")
    ap.add_argument("--out", type=Path, required=True, help="folder for train.jsonl and test.jsonl")
    ap.add_argument("--tokenizer", help="local model folder whose chat template renders the prompt")
    ap.add_argument("--limit", type=int, help="convert only the first N rows of each split")
    args = ap.parse_args(argv)
    splits = {name: path for name, path in (("train", args.train), ("test", args.test)) if path}
    if not splits:
        ap.error("give --train and/or --test")
    render = tokenizer_template(args.tokenizer) if args.tokenizer else chatml
    for name, src in splits.items():
        n = convert_file(src, args.out / f"{name}.jsonl", render, args.limit)
        print(f"{args.out / name}.jsonl: {n} problems from {src}")


if __name__ == "__main__":
    main()
