"""Write the calculator agent recipe's data: two-digit multiplications, which the tiny model cannot
do in its head but can do with the `calc` tool. Train and held-out sets share no problem.

Each train row carries `teacher_trace`, the text of a teacher's whole conversation in the plain
format (docs/agents.md): with probability `--call-rate` it calls the tool and copies the result,
`[calc:47*86]=4042;4042` (the `=4042;` is the tool result as the agent worker shows it); otherwise
it answers from its head, the product rounded down to hundreds (`4000`), which is wrong. The warm
start imitates the teacher, so it learns the call format but calls only now and then; RL, rewarded
for the right product, learns to call every time.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def row(a: int, b: int, trace: str | None = None) -> dict[str, str]:
    out = {"prompt": f"{a}*{b}=", "answer": str(a * b)}
    if trace is not None:
        out["teacher_trace"] = trace
    return out


def teacher(a: int, b: int, call_rate: float, rng: random.Random) -> str:
    if rng.random() < call_rate:
        return f"[calc:{a}*{b}]={a * b};{a * b}"
    return str(a * b // 100 * 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data"))
    ap.add_argument("--held-out", type=int, default=200)
    ap.add_argument("--call-rate", type=float, default=0.3, help="how often the teacher calls the tool")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    rng.shuffle(pairs)
    test, train = pairs[: args.held_out], pairs[args.held_out :]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {
        "test": [row(a, b) for a, b in test],
        "train": [row(a, b, teacher(a, b, args.call_rate, rng)) for a, b in train],
    }
    for name, part in rows.items():
        with (out / f"{name}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)
        print(f"{out / name}.jsonl: {len(part)} problems")
    calls = sum(r["teacher_trace"].startswith("[") for r in rows["train"]) / len(rows["train"])
    print(f"teacher call rate on train: {calls:.3f}")


if __name__ == "__main__":
    main()
