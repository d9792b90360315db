"""Shared by the runtime benchmarks: load the recipe (hyperparameters always come from it), warm start,
held-out greedy evaluation, and small formatting helpers."""

from __future__ import annotations

import hashlib
import os
import random
import resource
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nexrl_runtime.config import NexRLConfig, load_config
from nexrl_runtime.data.loader import DataLoader
from nexrl_runtime.data.readers import load_items
from nexrl_runtime.held_out import evaluate_held_out, held_out_items
from nexrl_runtime.inference.local import LocalEngine
from nexrl_runtime.models import build_policy
from nexrl_runtime.registry import resolve_class
from nexrl_runtime.rollout.evaluator import Evaluator
from nexrl_runtime.rollout.worker import RolloutWorker
from nexrl_runtime.warm_start import warm_start

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = str(REPO / "recipe" / "arithmetic" / "arithmetic.yaml")
State = dict[str, torch.Tensor]


def load_recipe(path: str, overrides: Sequence[str]) -> NexRLConfig:
    """The recipe as the CLI would load it; later overrides win over earlier ones."""
    return load_config(path, list(overrides))


def load_evaluator(cfg: NexRLConfig) -> Evaluator:
    """The recipe's evaluator, resolved exactly as the controller does."""
    return resolve_class(cfg.rollout.evaluator, {}, Evaluator, cfg.recipe_dir)()


def seeded_policy(cfg: NexRLConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The recipe's policy with the controller's seeding (same initial weights as a `nexrl run`)."""
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return build_policy(cfg.model)


def warm_started_state(cfg: NexRLConfig) -> tuple[State, PreTrainedModel, PreTrainedTokenizerBase]:
    """Run NexRL's supervised warm start as the controller would; return a copy of the weights."""
    model, tok = seeded_policy(cfg)
    ws = cfg.warm_start
    if ws.steps:
        data = cfg.data.model_copy(update={"batch_size": ws.batch_size, "rollout_repeat_n": 1})
        warm_start(model, tok, DataLoader(data, cfg.recipe_dir), ws)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, model, tok


class HeldOutEval:
    """Greedy accuracy on the recipe's validation file, computed the same way for any model: NexRL's
    held-out evaluation on a private engine copy of the weights (so it never touches training state)."""

    def __init__(self, cfg: NexRLConfig, model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> None:
        v = cfg.validation
        if not v.path:
            raise SystemExit("the recipe has no validation.path: nothing to measure accuracy on")
        rows = load_items(Path(cfg.recipe_dir) / v.path, "auto", limit=v.limit)
        self.path = v.path
        self.items = held_out_items(rows, cfg.data.prompt_key)
        engine = LocalEngine(model, tok.pad_token_id, tok.eos_token_id, cfg.seed)
        self.engine = engine
        self.worker = RolloutWorker(engine, tok, load_evaluator(cfg), cfg.rollout, "bench-eval")

    def __call__(self, state: Mapping[str, torch.Tensor]) -> float:
        self.engine.load_weights(state, 0)
        return evaluate_held_out(self.worker, self.items, greedy=True).get("val_accuracy", 0.0)


def recipe_fingerprint(cfg: NexRLConfig) -> str:
    """A short hash of the recipe folder's files (YAML, evaluator, data), to tell tuned versions apart."""
    h = hashlib.sha256()
    for f in sorted(
        p for p in Path(cfg.recipe_dir).rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ):
        h.update(f.relative_to(cfg.recipe_dir).as_posix().encode() + f.read_bytes())
    return h.hexdigest()[:10]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_note() -> str:
    """The machine's load average and core count, for the caveats of a noisy shared machine."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def mean_median(xs: Sequence[float]) -> tuple[float, float]:
    return (statistics.fmean(xs), statistics.median(xs)) if xs else (float("nan"), float("nan"))
