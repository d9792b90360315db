"""The training service over real HTTP on loopback: remote == in-process, 4xx with reasons, crash
safety, and the arithmetic recipe in training-service mode.

Tolerances (float32, CPU), with what was measured over the two train steps of each case:
* loss: 1e-5 relative or 1e-7 absolute. Measured: identical (0.0) when every datum is sent (KL +
  entropy, SFT); 8e-9 absolute / 1.2e-6 relative when zero-advantage datums are dropped (the
  service then pads fewer rows, so matmul shapes and summation order differ).
* weights: 2e-5 absolute. Measured: identical without drops; 1.6e-6 with drops after 12 Adam
  steps that moved weights by up to 6e-3 (Adam divides by sqrt(v), magnifying float noise in
  tiny gradients).
"""

from __future__ import annotations

import copy
import hashlib
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
from threaded_server import ThreadedServer

from nexrl_runtime.config import load_config
from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.controller import Controller
from nexrl_runtime.models import build_policy
from nexrl_runtime.trainer import TRAINERS, Trainer
from nexrl_runtime.trainer.losses import token_logprobs
from nexrl_runtime.trainer_service.api import Datum, ForwardBackwardRequest, Norm
from nexrl_runtime.trainer_service.client import TrainerClient, TrainerServiceError
from nexrl_runtime.trainer_service.server import build_service, create_app
from nexrl_runtime.trainer_service.service_trainer import TrainingServiceTrainer
from nexrl_runtime.types import Batch, Trajectory

RECIPE = Path(__file__).resolve().parents[2] / "recipe" / "arithmetic" / "arithmetic.yaml"
SMALL = ["model.hidden_size=32", "model.num_layers=1", "threads=1", "logging.progress_bar=false"]
LOSS_RTOL, LOSS_ATOL, WEIGHT_ATOL = 1e-5, 1e-7, 2e-5
# group rewards: g2 has equal rewards, so its 2 datums have advantage 0 (dropped when the loss allows)
GROUP_REWARDS = [[1, 0, 0], [0, 1], [1, 1], [0, 0, 1]]
STARTUP_S = 60.0
JSON = {"content-type": "application/json"}


def config(tmp_path: Path, *overrides: str) -> NexRLConfig:
    return load_config(RECIPE, [f"output_dir={tmp_path}", *SMALL, *overrides])


def policy(cfg: NexRLConfig) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(cfg.seed)
    model, tok = build_policy(cfg.model)
    return model, tok.pad_token_id


def make_batch(model: torch.nn.Module, seed: int = 1) -> Batch:
    """Unequal lengths; old logprobs = the model's own plus noise, so ratios clip both ways."""
    g = torch.Generator().manual_seed(seed)
    trajs = []
    for gi, rewards in enumerate(GROUP_REWARDS):
        prompt = torch.randint(3, 15, (3,), generator=g).tolist()
        for reward in rewards:
            n = int(torch.randint(1, 6, (1,), generator=g))
            tokens = prompt + torch.randint(3, 15, (n,), generator=g).tolist()
            ids = torch.tensor([tokens])
            with torch.no_grad():
                lp = token_logprobs(model(input_ids=ids).logits, ids)[0]
            lp = (lp + 0.3 * torch.randn(len(tokens), generator=g)).tolist()
            mask = [0] * len(prompt) + [1] * n
            trajs.append(
                Trajectory(
                    tokens,
                    mask,
                    [x * m for x, m in zip(lp, mask, strict=True)],
                    float(reward),
                    f"g{gi}",
                    "t",
                    0,
                    3,
                )
            )
    return Batch(trajs)


@contextmanager
def service(cfg: NexRLConfig) -> Iterator[TrainerClient]:
    """A real uvicorn server on a loopback port, in a thread, and a client of it."""
    with ThreadedServer(create_app(build_service(cfg))) as server, TrainerClient(server.url) as client:
        yield client


def max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize(
    ("overrides", "dropped"),
    [
        (["trainer.mini_batch_size=4", "trainer.micro_batch_size=2", "trainer.ppo_epochs=2"], 2),
        (
            [
                "trainer.grpo.kl_coef=0.1",
                "trainer.grpo.entropy_coef=0.01",
                "trainer.grpo.loss_agg=seq-mean-token-mean",
            ],
            0,
        ),
        (["trainer.type=sft", "trainer.mini_batch_size=5"], 0),
    ],
    ids=["grpo-minibatches-drops-zero-adv", "grpo-kl-entropy", "sft"],
)
def test_remote_equals_in_process(tmp_path: Path, overrides: list[str], dropped: int) -> None:
    cfg = config(tmp_path, *overrides)
    model, pad = policy(cfg)
    start = copy.deepcopy(model.state_dict())
    batch = make_batch(model)
    local: Trainer = TRAINERS[cfg.trainer.type](model, cfg.trainer, pad)
    with service(cfg) as client:
        remote = TrainingServiceTrainer(client, cfg.trainer, pad)
        remote.check_service(client.health())
        remote.load_state_dict(start)  # same start whatever the service built
        for _ in range(2):
            want, got = local.train_step(batch), remote.train_step(batch)
            assert got["loss"] == pytest.approx(want["loss"], rel=LOSS_RTOL, abs=LOSS_ATOL)
            assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-5)
            assert got["optimizer_steps"] == want["optimizer_steps"]
            assert got["dropped_zero_adv"] == dropped
        remote_weights = remote.state_dict()
        assert client.health().step == 2 * want["optimizer_steps"]
    gap, moved = max_gap(remote_weights, local.model.state_dict()), max_gap(start, local.model.state_dict())
    assert gap < WEIGHT_ATOL and moved > 20 * WEIGHT_ATOL, f"weight gap {gap:.2e}, moved {moved:.2e}"


def test_logprobs_and_sampler_weights(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = config(tmp_path)
    model, _ = policy(cfg)
    seqs = [[3, 4, 5, 6], [7, 8]]
    with service(cfg) as client:
        client.put_weights(model.state_dict())
        got = client.compute_logprobs(seqs)
        saved = client.save_weights("v1")
    for seq, lp in zip(seqs, got, strict=True):
        ids = torch.tensor([seq])
        want = token_logprobs(model(input_ids=ids).logits, ids)[0].tolist()
        assert lp == pytest.approx(want, abs=1e-5)
    folder = Path(saved.path)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert max_gap(loaded.state_dict(), model.state_dict()) == 0.0


def fb_json(datums: list[dict], **extra: object) -> dict:
    return {"loss": "grpo", "datums": datums, **extra}


def test_bad_requests_get_4xx_with_a_reason(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    ok = {"tokens": [3, 4, 5], "loss_mask": [0, 1, 1], "logprobs": [0.0, -1.0, -1.0], "advantage": 1.0}
    too_long = {"tokens": [3] * 40, "loss_mask": [1] * 40, "logprobs": [0.0] * 40}
    cases = [  # (method, path, json body, status, words the reason must contain)
        ("POST", "/forward_backward", fb_json([{**ok, "loss_mask": [0, 1]}]), 422, "same length"),
        ("POST", "/forward_backward", fb_json([{**ok, "advantage": float("nan")}]), 422, "finite"),
        ("POST", "/forward_backward", fb_json([{**ok, "tokens": [3, 4, 99]}]), 400, "out of range"),
        ("POST", "/forward_backward", fb_json([too_long]), 400, "at most 32"),
        ("POST", "/forward_backward", {**fb_json([ok]), "loss": "ppo"}, 400, "unknown loss"),
        ("POST", "/forward_backward", fb_json([ok], norm={"num_tokens": 1, "num_seqs": 1}), 400, "smaller"),
        ("POST", "/forward_backward", fb_json([], loss_config={"kl_coef": 0.1}), 400, "reference"),
        ("POST", "/forward_backward", fb_json([]), 400, "nothing to compute"),
        ("POST", "/optim_step", None, 409, "forward_backward first"),
        ("POST", "/compute_logprobs", {"sequences": [[]]}, 422, "at least 1"),
        ("POST", "/save_checkpoint", {"name": "../escape"}, 422, "pattern"),
        ("POST", "/load_checkpoint", {"name": "missing"}, 404, "no checkpoint"),
    ]
    with service(cfg) as client:
        for method, path, body, status, words in cases:
            # json.dumps, not httpx's json=: it writes NaN, which a careless client could send too
            r = client.http.request(method, path, content=json.dumps(body), headers=JSON)
            assert r.status_code == status, (path, words, r.text)
            assert words in json.dumps(r.json()), (path, words, r.text)
        r = client.http.put("/weights", content=b"not safetensors")
        assert r.status_code == 400 and "not a safetensors" in r.json()["detail"]
        r = client.http.put("/weights", content=_to_bytes({"nope": torch.zeros(2)}))
        assert r.status_code == 400 and "do not fit" in r.json()["detail"]
        client.save_weights("w")
        with pytest.raises(TrainerServiceError) as err:
            client.save_weights("w")
        assert err.value.status == 409 and "new folder" in str(err.value.reason)
        assert client.health().step == 0  # nothing refused changed the model


def _to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from nexrl_runtime.trainer_service.storage import to_bytes

    return to_bytes(state)


# Run as a separate process: like `nexrl serve-trainer`, but the first torch.save (a checkpoint)
# writes half its bytes and the process dies on the spot, as a kill mid-write would leave it.
CRASH_ON_SAVE = """
import io, os, sys, torch
from nexrl_runtime.cli import main
def crash_mid_write(obj, f, *args, **kwargs):
    buf = io.BytesIO(); real_save(obj, buf)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush(); os._exit(137)
real_save, torch.save = torch.save, crash_mid_write
sys.exit(main(sys.argv[1:]))
"""


@contextmanager
def server_process(
    cfg_overrides: list[str], crash_on_save: bool = False
) -> Iterator[tuple[subprocess.Popen, str]]:
    """`nexrl serve-trainer --port 0` as a real process; yields it and the URL it printed."""
    head = (
        [sys.executable, "-c", CRASH_ON_SAVE]
        if crash_on_save
        else [sys.executable, "-m", "nexrl_runtime.cli"]
    )
    cmd = [*head, "serve-trainer", "-c", str(RECIPE), "--host", "127.0.0.1", "--port", "0", *cfg_overrides]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [*map(lines.put, proc.stdout), lines.put(None)], daemon=True).start()
    try:
        seen = []
        while not (seen and "listening on" in (seen[-1] or "")):
            line = lines.get(timeout=STARTUP_S)
            if line is None:
                raise RuntimeError(f"serve-trainer exited ({proc.wait()}):\n{''.join(seen)}")
            seen.append(line)
        yield proc, seen[-1].rsplit(" ", 1)[-1].strip()
    finally:
        proc.kill()
        proc.wait(timeout=30)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fb_request(batch: Batch) -> ForwardBackwardRequest:
    datums = [
        Datum(tokens=t.tokens, loss_mask=t.loss_mask, logprobs=t.logprobs, advantage=1.0)
        for t in batch.trajectories
    ]
    return ForwardBackwardRequest(loss="grpo", datums=datums, norm=Norm(num_tokens=100, num_seqs=len(datums)))


@pytest.mark.slow
def test_crash_mid_step_or_mid_save_loses_no_checkpoint(tmp_path: Path) -> None:
    overrides = [f"output_dir={tmp_path}", *SMALL]
    cfg = config(tmp_path)
    model, pad = policy(cfg)
    batch = make_batch(model)
    ckpt = tmp_path / "trainer_service" / "checkpoints" / "ckpt.pt"

    # 1. killed between forward_backward and optim_step
    with server_process(overrides) as (proc, url), TrainerClient(url, retries=0) as client:
        client.wait_ready(STARTUP_S)
        client.put_weights(model.state_dict())
        client.save_checkpoint("ckpt")
        client.forward_backward(fb_request(batch))
        proc.kill()
    saved = sha(ckpt)

    # 2. restarted: the checkpoint loads, the lost gradient is not applied; then killed mid-save
    with (
        server_process(overrides, crash_on_save=True) as (proc, url),
        TrainerClient(url, retries=0) as client,
    ):
        assert client.load_checkpoint("ckpt").step == 0
        assert max_gap(client.get_weights(), model.state_dict()) == 0.0
        with pytest.raises(TrainerServiceError, match="forward_backward first"):
            client.optim_step()
        remote = TrainingServiceTrainer(client, cfg.trainer, pad)
        remote.train_step(batch)
        with pytest.raises(httpx.TransportError):
            client.save_checkpoint("ckpt")
        assert proc.wait(timeout=30) == 137
    assert sha(ckpt) == saved, "the crash mid-save touched the last good checkpoint"
    assert list(ckpt.parent.glob(".ckpt.pt.*.tmp")), "expected the half-written temp file"

    # 3. restarted again (a new service on the same disk): temp files gone, the good checkpoint loads,
    #    and the redone step equals the in-process one
    local = TRAINERS["grpo"](copy.deepcopy(model), cfg.trainer, pad)
    local.train_step(batch)
    with service(cfg) as client:
        assert not list(ckpt.parent.glob(".*.tmp"))
        assert client.load_checkpoint("ckpt").step == 0
        TrainingServiceTrainer(client, cfg.trainer, pad).train_step(batch)
        assert max_gap(client.get_weights(), local.model.state_dict()) < WEIGHT_ATOL


def test_arithmetic_recipe_in_training_service_mode(tmp_path: Path) -> None:
    run = [
        "mode=training-service",
        "total_steps=3",
        "warm_start.steps=5",
        "validation.path=null",
        "data.batch_size=4",
        "data.rollout_repeat_n=4",
        "logging.plot=false",
    ]
    # another seed: the service's own init differs from the controller's policy, so the test can
    # tell that the service trained from the (warm-started) weights the controller uploaded
    with service(config(tmp_path / "service", "seed=7")) as client:
        service_init = client.get_weights()
        cfg = config(tmp_path / "run", *run, f"cluster.trainer.base_url={client.base_url}")
        controller = Controller(cfg, echo=None)
        summary = controller.run()
        served, health = client.get_weights(), client.health()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["phase"] == "rl" and r["step"] > 0]
    assert summary.steps == 3 and [r["weight_pushes"] for r in rl] == [1, 2, 3]
    assert health.step == 3  # one optimizer step per train step, all of them on the service
    assert all(r["dropped_zero_adv"] >= 0 and r["optimizer_steps"] == 1 for r in rl)
    # the weights the in-process engine serves are the service's, as of the last push
    assert max_gap(served, controller.engine.model.state_dict()) == 0.0
    # controller.model is the warm-started policy (RL never touched it): 3 Adam steps from it
    assert max_gap(served, controller.model.state_dict()) < 0.01 < max_gap(service_init, served)
