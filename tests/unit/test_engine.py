"""The in-process engine: logprobs equal a full forward pass, greedy is deterministic, eos stops,
top-p keeps only the nucleus, weights and versions swap."""

from __future__ import annotations

import torch

from nexrl_runtime.config.schema import ModelConfig
from nexrl_runtime.inference import LocalEngine, SamplingParams
from nexrl_runtime.inference.local import sample_next
from nexrl_runtime.models import build_policy


def engine(seed: int = 0) -> tuple[LocalEngine, object]:
    torch.manual_seed(seed)
    model, tok = build_policy(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, max_positions=32))
    return LocalEngine(model, tok.pad_token_id, tok.eos_token_id, seed=seed), tok


def test_logprobs_match_full_forward_with_left_padding() -> None:
    eng, tok = engine()
    prompts = [tok("12+345=")["input_ids"], tok("1=")["input_ids"]]
    out = eng.generate(prompts, SamplingParams(max_new_tokens=6, n=3))
    assert [len(g) for g in out] == [3, 3]
    for group in out:
        for c in group:
            full = torch.tensor([c.prompt_ids + c.token_ids])
            with torch.no_grad():
                logits = eng.model(full).logits[0, :-1]
            ref = torch.log_softmax(logits, -1).gather(-1, full[0, 1:, None]).squeeze(-1)
            got = torch.tensor(c.logprobs)
            assert torch.allclose(ref[len(c.prompt_ids) - 1 :], got, atol=1e-5)


def test_greedy_is_deterministic_and_stops_at_stop_tokens() -> None:
    eng, tok = engine()
    p = [tok("7+8=")["input_ids"]]
    a = eng.generate(p, SamplingParams(temperature=0.0, max_new_tokens=8))[0][0]
    b = eng.generate(p, SamplingParams(temperature=0.0, max_new_tokens=8))[0][0]
    assert a.token_ids == b.token_ids
    # the first greedy token as a stop token: generation must end right after it, as for eos
    c = eng.generate(p, SamplingParams(temperature=0.0, max_new_tokens=8, stop_token_ids=(a.token_ids[0],)))[
        0
    ][0]
    assert c.token_ids == a.token_ids[:1] and c.finish_reason == "stop"
    assert a.finish_reason in {"stop", "length"}


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    seen = {int(sample_next(logits, 1.0, 0.7, gen)) for _ in range(300)}
    assert seen == {0, 1}  # 0.5 + 0.3 reaches 0.7; tokens 2 and 3 are cut
    assert {int(sample_next(logits, 1.0, 1.0, gen)) for _ in range(300)} == {0, 1, 2, 3}
    assert int(sample_next(logits, 0.0, 1.0, gen)) == 0


def test_load_weights_changes_outputs_and_version() -> None:
    eng, tok = engine(0)
    other, _ = engine(1)
    p = [tok("12+3=")["input_ids"]]
    before = eng.generate(p, SamplingParams(temperature=0.0, max_new_tokens=5))[0][0]
    eng.load_weights(other.model.state_dict(), version=7)
    after = eng.generate(p, SamplingParams(temperature=0.0, max_new_tokens=5))[0][0]
    expected = other.generate(p, SamplingParams(temperature=0.0, max_new_tokens=5))[0][0]
    assert after.policy_version == 7 and before.policy_version == 0
    assert after.token_ids == expected.token_ids
    assert after.logprobs != before.logprobs
