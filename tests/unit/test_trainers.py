"""GRPO/SFT trainers on a 1-layer GPT-2: learning direction, grad-accum equivalence, KL, checkpoints."""

from __future__ import annotations

import copy
import itertools
import math
import os
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from nexrl_runtime.config.schema import GRPOConfig, OptimConfig, TrainerConfig
from nexrl_runtime.registry import RegistryError, resolve_class
from nexrl_runtime.trainer import TRAINERS, GRPOTrainer, SFTTrainer, Trainer, collate
from nexrl_runtime.trainer.losses import token_logprobs
from nexrl_runtime.types import Batch, Trajectory

torch.set_num_threads(1)

VOCAB, PAD = 20, 0
# (group, prompt, response, reward): unequal lengths so the loss aggregations disagree; group "c"
# has equal rewards and so zero advantage.
SPECS = [
    ("a", [3, 4, 5], [6, 7, 8, 9], 1.0),
    ("a", [3, 4, 5], [10, 11], 0.0),
    ("a", [3, 4, 5], [12], 0.0),
    ("b", [4, 4], [13, 14, 15], 0.0),
    ("b", [4, 4], [16, 17, 18, 19, 6], 1.0),
    ("c", [5], [7, 8], 1.0),
    ("c", [5], [9], 1.0),
]


def tiny_model(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=32,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=1, eos_token_id=2, pad_token_id=PAD,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg)


@torch.no_grad()
def response_logprobs(model: torch.nn.Module, tokens: list[int], prompt_len: int) -> list[float]:
    ids = torch.tensor([tokens])
    lp = token_logprobs(model(input_ids=ids).logits, ids)[0].tolist()
    return [x if i >= prompt_len else 0.0 for i, x in enumerate(lp)]


def make_batch(model: torch.nn.Module, policy_version: int = 0) -> Batch:
    """On-policy trajectories: logprobs are the model's own, as a sampler at temperature 1 would give."""
    trajs = []
    for group, prompt, resp, reward in SPECS:
        tokens = prompt + resp
        trajs.append(
            Trajectory(
                tokens=tokens,
                loss_mask=[0] * len(prompt) + [1] * len(resp),
                logprobs=response_logprobs(model, tokens, len(prompt)),
                reward=reward,
                group_id=group,
                run_id="test",
                policy_version=policy_version,
                prompt_length=len(prompt),
            )
        )
    return Batch(trajs)


def config(lr: float = 3e-3, **kw: object) -> TrainerConfig:
    grpo_keys = set(GRPOConfig.model_fields)
    grpo = GRPOConfig(**{k: v for k, v in kw.items() if k in grpo_keys})  # type: ignore[arg-type]
    rest = {k: v for k, v in kw.items() if k not in grpo_keys}
    return TrainerConfig(optim=OptimConfig(lr=lr, grad_clip=None), grpo=grpo, **rest)  # type: ignore[arg-type]


def test_registry_resolves_names_and_module_paths() -> None:
    assert set(TRAINERS) == {"grpo", "sft"}
    assert TRAINERS["grpo"] is GRPOTrainer and TRAINERS["sft"] is SFTTrainer
    assert resolve_class("grpo", TRAINERS, Trainer) is GRPOTrainer
    assert resolve_class("nexrl_runtime.trainer.sft:SFTTrainer", TRAINERS, Trainer) is SFTTrainer
    with pytest.raises(RegistryError, match="unknown Trainer 'ppo'"):
        resolve_class("ppo", TRAINERS, Trainer)
    with pytest.raises(RegistryError, match="not a subclass"):
        resolve_class("nexrl_runtime.types:Batch", TRAINERS, Trainer)


def test_first_update_is_on_policy_with_zero_kl_and_frozen_reference() -> None:
    model = tiny_model()
    trainer = GRPOTrainer(model, config(kl_coef=0.1, kl_estimator="k3"), PAD)
    ref = trainer.ref_model
    assert ref is not None and not ref.training
    assert all(not p.requires_grad for p in ref.parameters())
    ref_before = {k: v.clone() for k, v in ref.state_dict().items()}

    batch = make_batch(model, policy_version=1)
    batch.metadata["policy_version"] = 3
    m = trainer.train_step(batch)

    assert m["kl"] == pytest.approx(0.0, abs=1e-6)
    assert m["ppo_kl"] == pytest.approx(0.0, abs=1e-5)  # ratio 1: the batch is on-policy
    assert m["clip_frac"] == 0.0
    assert m["num_tokens"] == 18 and m["num_seqs"] == 7 and m["optimizer_steps"] == 1
    assert m["reward_mean"] == pytest.approx(4 / 7)
    assert m["zero_adv_frac"] == pytest.approx(2 / 7)  # group c
    assert m["version_lag_mean"] == 2 and m["version_lag_max"] == 2
    assert m["lr"] == 3e-3 and m["entropy"] > 0 and m["grad_norm"] > 0
    for key, value in ref.state_dict().items():
        assert torch.equal(value, ref_before[key]), f"reference weight {key} moved"
    assert not torch.equal(model.state_dict()["lm_head.weight"], ref.state_dict()["lm_head.weight"])
    # After the update the policy has left the reference: KL is now positive.
    assert trainer.train_step(batch)["kl"] > 0


def test_grpo_step_moves_logprobs_along_advantages_and_lowers_the_loss() -> None:
    model = tiny_model()
    trainer = GRPOTrainer(model, config(), PAD)
    batch = make_batch(model)
    adv, _ = trainer.prepare(batch)
    before = [sum(t.logprobs) for t in batch.trajectories]

    first = trainer.train_step(batch)
    after = [sum(response_logprobs(model, t.tokens, t.prompt_length)) for t in batch.trajectories]
    for a, b0, b1 in zip(adv.tolist(), before, after, strict=True):
        if a > 0:
            assert b1 > b0
        elif a < 0:
            assert b1 < b0
    # Same (now off-policy) batch again: the PPO loss at the new weights is lower.
    second = trainer.train_step(batch)
    assert second["pg_loss"] < first["pg_loss"]
    assert abs(second["ppo_kl"]) > 1e-4  # k1 estimate of KL(old || new): signed, but no longer 0


def _grads(trainer: Trainer, batch: Batch) -> dict[str, torch.Tensor]:
    adv, _ = trainer.prepare(batch)
    trainer.backward(collate(batch.trajectories, PAD, adv))
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("micro", [1, 3])
@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_grad_accumulation_equals_one_pass(loss_agg: str, micro: int) -> None:
    base = tiny_model()
    batch = make_batch(base)
    kw = {"loss_agg": loss_agg, "kl_coef": 0.1, "kl_estimator": "k3", "entropy_coef": 0.01}
    one_pass = GRPOTrainer(copy.deepcopy(base), config(**kw), PAD)
    accum = GRPOTrainer(copy.deepcopy(base), config(micro_batch_size=micro, **kw), PAD)
    # Move both policies off their reference (and off the sampler) so the KL and ratio terms have gradients.
    for t in (one_pass, accum):
        torch.manual_seed(1)
        with torch.no_grad():
            for p in t.model.parameters():
                p.add_(0.05 * torch.randn_like(p))

    g1, g2 = _grads(one_pass, batch), _grads(accum, batch)
    assert g1.keys() == g2.keys() and g1
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-4, atol=1e-6, msg=name)


def test_sft_grad_accumulation_equals_one_pass() -> None:
    base = tiny_model()
    batch = make_batch(base)
    g1 = _grads(SFTTrainer(copy.deepcopy(base), config(), PAD), batch)
    g2 = _grads(SFTTrainer(copy.deepcopy(base), config(micro_batch_size=2), PAD), batch)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-4, atol=1e-6, msg=name)


def test_mini_batches_and_epochs_each_take_an_optimizer_step() -> None:
    model = tiny_model()
    trainer = GRPOTrainer(model, config(mini_batch_size=3, micro_batch_size=2, ppo_epochs=2), PAD)
    m = trainer.train_step(make_batch(model))
    assert m["optimizer_steps"] == 6  # ceil(7 / 3) mini-batches x 2 epochs
    assert m["skipped_steps"] == 0 and trainer.global_step == 1


def test_non_finite_gradient_skips_the_update() -> None:
    model = tiny_model()
    trainer = GRPOTrainer(model, config(), PAD)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.lm_head.weight.register_hook(lambda g: g * math.nan)
    m = trainer.train_step(make_batch(model))
    assert m["skipped_steps"] == 1 and math.isnan(m["grad_norm"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_sft_steps_reduce_cross_entropy() -> None:
    model = tiny_model()
    trainer = SFTTrainer(model, config(lr=1e-2), PAD)
    batch = make_batch(model)
    losses = [trainer.train_step(batch)["loss"] for _ in range(5)]
    # The first loss is the untrained CE on the 18 answer tokens: about ln(20) = 3.0.
    expected = -sum(sum(t.logprobs) for t in batch.trajectories) / 18
    assert losses[0] == pytest.approx(expected, rel=1e-5)
    assert losses[-1] < losses[0] - 0.5
    assert all(b < a for a, b in itertools.pairwise(losses))


def test_state_dict_is_the_live_detached_weights() -> None:
    model = tiny_model()
    sd = GRPOTrainer(model, config(), PAD).state_dict()
    params = dict(model.named_parameters())
    assert sd.keys() == model.state_dict().keys()
    for name, p in params.items():
        assert not sd[name].requires_grad and sd[name].data_ptr() == p.data_ptr()


def test_save_load_round_trip_resumes_identically(tmp_path: Path) -> None:
    batch = make_batch(tiny_model())
    a = GRPOTrainer(tiny_model(), config(), PAD)
    a.train_step(batch)
    path = tmp_path / "ckpt" / "trainer.pt"
    a.save(path)
    a.save(path)  # overwriting an existing checkpoint is fine
    assert os.listdir(path.parent) == ["trainer.pt"]  # no temp file left behind

    b = GRPOTrainer(tiny_model(seed=123), config(), PAD)
    b.load(path)
    assert b.global_step == 1
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value)
    # Adam's moments came back too: the next step is the same on both.
    a.train_step(batch)
    b.train_step(batch)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=0, atol=0)
