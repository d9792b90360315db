"""Write the arithmetic recipe's data: two-number addition, answers written least-significant digit
first (the order a carry is computed in). Train and held-out sets share no problem.

Each train row also carries `teacher_answer`, from a weak teacher that forgets each carry with
probability `--forget`: the warm start imitates the teacher (and so learns the format and its
mistakes); GRPO, scored against the true `answer`, must do better than its teacher.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def weak_sum(a: int, b: int, forget: float, rng: random.Random) -> int:
    """Schoolbook addition that drops each carry with probability `forget`."""
    total, carry, place = 0, 0, 1
    while a or b or carry:
        digit_sum = a % 10 + b % 10 + carry
        total += (digit_sum % 10) * place
        carry = digit_sum // 10 if rng.random() >= forget else 0
        a, b, place = a // 10, b // 10, place * 10
    return total


def row(a: int, b: int, teacher: int | None = None) -> dict[str, str]:
    out = {"prompt": f"{a}+{b}=", "answer": str(a + b)[::-1]}
    if teacher is not None:
        out["teacher_answer"] = str(teacher)[::-1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data"))
    ap.add_argument("--max-operand", type=int, default=99)
    ap.add_argument("--held-out", type=int, default=200)
    ap.add_argument("--forget", type=float, default=0.6, help="the weak teacher's chance to drop a carry")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    pairs = [(a, b) for a in range(args.max_operand + 1) for b in range(args.max_operand + 1)]
    rng.shuffle(pairs)
    test, train = pairs[: args.held_out], pairs[args.held_out :]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {
        "test": [row(a, b) for a, b in test],
        "train": [row(a, b, weak_sum(a, b, args.forget, rng)) for a, b in train],
    }
    for name, part in rows.items():
        with (out / f"{name}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)
        print(f"{out / name}.jsonl: {len(part)} problems")
    right = sum(r["teacher_answer"] == r["answer"] for r in rows["train"]) / len(rows["train"])
    print(f"weak teacher accuracy on train: {right:.3f}")


if __name__ == "__main__":
    main()
