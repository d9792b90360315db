"""The trainer rank group (nexrl_runtime/trainer/fsdp.py): 2 FSDP2 ranks under torchrun (gloo, CPU)
train exactly like one process, for every loss aggregation, with mini-batches, micro-batches and
2 epochs over a batch of very uneven lengths; with the old logprobs recomputed (split over the
ranks) and a cosine lr schedule, also across a save + load between steps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nexrl_runtime.trainer.fsdp import split_by_tokens
from tests.support import fsdp_worker

WORKER = Path(fsdp_worker.__file__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, script: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(script),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return proc


def test_split_by_tokens_balances_tokens_not_rows() -> None:
    lengths = [40, 5, 5, 5, 5, 5, 5, 30]
    shares = split_by_tokens(lengths, 2)
    assert sorted(i for s in shares for i in s) == list(range(8))
    loads = [sum(lengths[i] for i in s) for s in shares]
    assert max(loads) - min(loads) <= 5
    assert len(shares[0]) != len(shares[1])  # rows are uneven: tokens are what is balanced
    assert split_by_tokens([3], 2) == [[0], []]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    torchrun(2, WORKER, str(out))
    return out


@pytest.mark.parametrize("case", [*fsdp_worker.CASES, f"{fsdp_worker.RESUMED}-resumed"])
def test_two_ranks_equal_one_process(two_ranks: Path, case: str) -> None:
    """Each case on 2 ranks equals one process; the resumed case (2 ranks, saved and loaded between
    its steps) equals one uninterrupted process: the lr schedule and optimizer state carry over."""
    torch.set_num_threads(1)
    single = fsdp_worker.run(case.removesuffix("-resumed"), lambda cls, m, c: cls(m, c, 0))
    sharded = torch.load(two_ranks / f"{case}.pt", weights_only=True)
    for one, two in zip(single["metrics"], sharded["metrics"], strict=True):
        assert one.keys() == two.keys()
        for key in one:
            assert two[key] == pytest.approx(one[key], abs=1e-5, rel=1e-5), key
        assert one["optimizer_steps"] == 6  # ceil(14 / 5) mini-batches x 2 epochs
    if case.startswith(fsdp_worker.RESUMED):
        lrs = [m["lr"] for m in single["metrics"]]
        assert lrs[0] != lrs[1] and min(m["old_logprob_diff_mean"] for m in single["metrics"]) > 0.1
    assert single["weights"].keys() == sharded["weights"].keys()
    moved = 0.0
    start = fsdp_worker.model().state_dict()
    for name, w in single["weights"].items():
        diff = (sharded["weights"][name] - w).abs().max().item()
        assert diff <= 1e-5, (name, diff)
        moved = max(moved, (w - start[name]).abs().max().item())
    assert moved > 1e-3  # the weights did train
