"""Write the arithmetic recipe's data: two-number addition, answers written least-significant digit
first (the order a carry is computed in). Train and held-out sets share no problem."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def problems(max_operand: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]


def row(a: int, b: int) -> dict[str, str]:
    return {"prompt": f"{a}+{b}=", "answer": str(a + b)[::-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data"))
    ap.add_argument("--max-operand", type=int, default=99)
    ap.add_argument("--held-out", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pairs = problems(args.max_operand)
    random.Random(args.seed).shuffle(pairs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("test", pairs[: args.held_out]), ("train", pairs[args.held_out :])):
        with (out / f"{name}.jsonl").open("w") as f:
            for a, b in part:
                f.write(json.dumps(row(a, b)) + "\n")
        print(f"{out / name}.jsonl: {len(part)} problems")


if __name__ == "__main__":
    main()
