"""Write the smollm2_cpu recipe's data: small additions asked in words, with the instruction to
answer with just the number. Train and held-out sets share no problem."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

QUESTION = "What is {a} plus {b}? Answer with just the number."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data"))
    ap.add_argument("--max-operand", type=int, default=20)
    ap.add_argument("--held-out", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pairs = [(a, b) for a in range(1, args.max_operand + 1) for b in range(1, args.max_operand + 1)]
    random.Random(args.seed).shuffle(pairs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("test", pairs[: args.held_out]), ("train", pairs[args.held_out :])):
        with (out / f"{name}.jsonl").open("w") as f:
            for a, b in part:
                f.write(json.dumps({"prompt": QUESTION.format(a=a, b=b), "answer": str(a + b)}) + "\n")
        print(f"{out / name}.jsonl: {len(part)} problems")


if __name__ == "__main__":
    main()
