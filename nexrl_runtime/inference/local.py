"""In-process inference on torch + transformers: batched KV-cached sampling with logprobs."""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Mapping

import torch
from transformers import PreTrainedModel

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator | None
) -> torch.Tensor:
    """Pick one token per row: greedy at temperature 0, else temperature + nucleus (top-p) sampling."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = sorted_p.cumsum(dim=-1) - sorted_p >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


class LocalEngine(InferenceEngine):
    """Serves its own copy of the policy, so training never races generation; `load_weights`
    copies new weights in under a lock."""

    def __init__(self, model: PreTrainedModel, pad_token_id: int, eos_token_id: int, seed: int = 0):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.policy_version = 0
        self._lock = threading.Lock()
        self._gen = torch.Generator(device=next(self.model.parameters()).device).manual_seed(seed)
        # transformers renamed `past_key_values` to `cache` (5.2x); speak whichever this model takes
        self._cache_arg = (
            "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        )

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        with self._lock, torch.no_grad():
            self.model.load_state_dict(state_dict, strict=True)
            self.policy_version = version

    def rng_states(self) -> list[torch.Tensor]:
        with self._lock:
            return [self._gen.get_state()]

    def set_rng_states(self, states: list[torch.Tensor]) -> None:
        if len(states) != 1:
            raise ConfigError(
                f"launch_mode / ray.engine_replicas: a local run has one engine generator, the "
                f"checkpoint holds {len(states)} (a run with {len(states)} engine actors); resume "
                "with the same layout"
            )
        with self._lock:
            self._gen.set_state(states[0])

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        if not prompts:
            return []
        expanded = [p for p in prompts for _ in range(params.n)]
        with self._lock:
            version = self.policy_version
            tokens, logprobs, reasons = self._sample(expanded, params)
        out = [
            Completion(list(p), t, lp, r, version)
            for p, t, lp, r in zip(expanded, tokens, logprobs, reasons, strict=True)
        ]
        return [out[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    @torch.inference_mode()
    def _sample(
        self, prompts: list[list[int]], params: SamplingParams
    ) -> tuple[list[list[int]], list[list[float]], list[str]]:
        device = next(self.model.parameters()).device
        stops = torch.tensor(sorted({self.eos_token_id, *params.stop_token_ids}), device=device)
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding keeps the next-token column aligned
            ids[i, width - len(p) :] = torch.tensor(p, device=device)
            mask[i, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        past, logits = getattr(out, self._cache_arg), out.logits[:, -1]
        done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        new_tokens, new_logprobs = [], []
        for _ in range(params.max_new_tokens):
            nxt = sample_next(logits, params.temperature, params.top_p, self._gen)
            lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, nxt[:, None]).squeeze(-1)
            nxt = nxt.masked_fill(done, self.pad_token_id)
            new_tokens.append(nxt)
            new_logprobs.append(lp)
            done |= torch.isin(nxt, stops)
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions[:, -1:] + 1
            out = self.model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{self._cache_arg: past},
            )
            past, logits = getattr(out, self._cache_arg), out.logits[:, -1]
        return self._unpack(torch.stack(new_tokens, 1), torch.stack(new_logprobs, 1), stops)

    def _unpack(
        self, toks: torch.Tensor, lps: torch.Tensor, stops: torch.Tensor
    ) -> tuple[list[list[int]], list[list[float]], list[str]]:
        tokens, logprobs, reasons = [], [], []
        stop_ids = set(stops.tolist())
        for row_t, row_lp in zip(toks.tolist(), lps.tolist(), strict=True):
            end = next((i + 1 for i, t in enumerate(row_t) if t in stop_ids), None)
            reasons.append("stop" if end is not None else "length")
            end = end or len(row_t)
            tokens.append(row_t[:end])
            logprobs.append(row_lp[:end])
        return tokens, logprobs, reasons
