"""`nexrl serve-trainer` on 2 ranks under torchrun (gloo, CPU, loopback): rank 0 serves HTTP and drives
rank 1; every endpoint works and training equals one in-process trainer."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from nexrl_runtime.trainer import TRAINERS
from nexrl_runtime.trainer.losses import token_logprobs
from nexrl_runtime.trainer_service.client import TrainerClient, TrainerServiceError
from nexrl_runtime.trainer_service.service_trainer import TrainingServiceTrainer
from tests.integration.test_fsdp_ranks import free_port
from tests.integration.test_trainer_service import JSON, RECIPE, SMALL, config, make_batch, max_gap, policy

OVERRIDES = ["trainer.mini_batch_size=4", "trainer.micro_batch_size=2", "trainer.ppo_epochs=2"]


@contextmanager
def torchrun_service(nproc: int, overrides: list[str]) -> Iterator[str]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        "-m", "nexrl_runtime.cli", "serve-trainer", "-c", str(RECIPE), "--host", "127.0.0.1", "--port", "0",
        *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # its own session: a failing test kills torchrun and its ranks together (no orphaned rank)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    lines: queue.Queue[str | None] = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=lambda: [*map(lines.put, proc.stdout), lines.put(None)], daemon=True).start()
    try:
        while not (seen and "listening on" in seen[-1]):
            line = lines.get(timeout=180)
            if line is None:
                raise RuntimeError(f"serve-trainer exited ({proc.wait()}):\n{''.join(seen)}")
            seen.append(line)
        assert f"({nproc} ranks)" in seen[-1]
        yield seen[-1].rsplit(" ", 1)[-1].strip()
        proc.terminate()  # torchrun passes SIGTERM on to both ranks (and then exits non-zero itself)
        proc.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        while (line := lines.get(timeout=10)) is not None:
            seen.append(line)
        assert not any("failed:" in s for s in seen), "".join(seen)


def test_two_rank_service_trains_like_one_process_and_serves_every_endpoint(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = config(tmp_path, *OVERRIDES)
    model, pad = policy(cfg)
    start = copy.deepcopy(model.state_dict())
    batch = make_batch(model)
    local = TRAINERS[cfg.trainer.type](model, cfg.trainer, pad)
    with (
        torchrun_service(2, [f"output_dir={tmp_path}", *SMALL, *OVERRIDES]) as url,
        TrainerClient(url) as client,
    ):
        health = client.health()
        assert health.step == 0 and not health.pending_gradient
        remote = TrainingServiceTrainer(client, cfg.trainer, pad)
        remote.check_service(health)
        remote.load_state_dict(start)
        assert max_gap(client.get_weights(), start) == 0.0
        for _ in range(2):
            want, got = local.train_step(batch), remote.train_step(batch)
            for key in ("loss", "pg_loss", "grad_norm", "clip_frac"):
                assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
            assert got["optimizer_steps"] == want["optimizer_steps"] == 6
        trained = client.get_weights()
        gap, moved = max_gap(trained, local.model.state_dict()), max_gap(start, trained)
        assert gap < 2e-5 and moved > 1e-3, (gap, moved)
        assert client.health().step == 12

        seqs = [[3, 4, 5, 6], [7, 8]]
        got_lp = client.compute_logprobs(seqs)
        for seq, lp in zip(seqs, got_lp, strict=True):
            ids = torch.tensor([seq])
            with torch.no_grad():
                expect = token_logprobs(local.model(input_ids=ids).logits, ids)[0].tolist()
            assert lp == pytest.approx(expect, abs=1e-4)

        saved = client.save_weights("v1")
        from safetensors.torch import load_file

        assert max_gap(load_file(Path(saved.path) / "model.safetensors"), trained) == 0.0
        client.save_checkpoint("c1")
        remote.train_step(batch)  # moves on ...
        assert max_gap(client.get_weights(), trained) > 0
        client.load_checkpoint("c1")  # ... and back: model, optimizer and step
        assert max_gap(client.get_weights(), trained) == 0.0 and client.health().step == 12
        again = remote.train_step(batch)
        local.train_step(batch)
        assert max_gap(client.get_weights(), local.model.state_dict()) < 2e-5
        assert again["optimizer_steps"] == 6

        # refusals are decided alike on every rank, and the service keeps serving after them
        bad = {"loss": "grpo", "datums": [{"tokens": [3, 99], "loss_mask": [0, 1], "logprobs": [0, -1]}]}
        r = client.http.post("/forward_backward", content=json.dumps(bad), headers=JSON)
        assert r.status_code == 400 and "out of range" in r.text
        assert client.http.post("/optim_step").status_code == 409
        assert client.http.post("/load_checkpoint", json={"name": "missing"}).status_code == 404
        assert client.http.put("/weights", content=b"nope").status_code == 400
        with pytest.raises(TrainerServiceError) as err:
            client.save_weights("v1")
        assert err.value.status == 409
        assert client.health().step == 18
