"""Run checkpoints: `<checkpoint.dir>/global_step_N` holds a run after exactly N RL updates.

A checkpoint folder is written as `.tmp-global_step_N-*` (the trainer's files, then the driver's
run state and RNG states), then its marker `COMPLETE` (the size of every file, written last and
fsynced), then renamed into place. A folder without a valid marker, or with a file whose size
differs from the marker's, is never loaded (`is_complete`). See docs/checkpoints.md.

Files: the trainer's part, `model.safetensors` + `optimizer.pt` (+ `ref_model.safetensors` when
GRPO has a KL reference) from a single-rank trainer, or `dcp/` (torch.distributed.checkpoint, every
rank its shards; the marker covers each of its files) + `trainer.pt` from a sharded one, either
loadable on any rank count (trainer/dcp_checkpoint.py); in mode=training-service `trainer.json`
naming the service's own checkpoint of that step. The driver's: `state.json` (step, policy
version, weight-sync counters, data position, unfinished groups, python/numpy RNG, config hash,
the step's metrics); `rng.pt` (torch CPU/CUDA and every inference engine's generator);
`config.json` (the whole config, for export).

    nexrl export CHECKPOINT OUT_DIR   # an HF folder of the policy
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexrl_runtime.config.loader import ConfigError
from nexrl_runtime.config.schema import NexRLConfig

MARKER = "COMPLETE"
STATE = "state.json"
RNG = "rng.pt"
CONFIG = "config.json"
PREFIX = "global_step_"
_NAME = re.compile(rf"{PREFIX}(\d+)")

# Fields that do not change what a run computes: how long it runs, where it writes, how it logs,
# how it resumes, where the cluster's services are.
HASH_EXCLUDED: tuple[str, ...] = (
    "total_steps",
    "resume",
    "checkpoint",
    "output_dir",
    "recipe_dir",
    "logging",
    "cluster",
    "inference.weights_dir",
    "ray.address",
    "ray.ready_timeout_s",
    "inference.ready_timeout_s",
    "inference.refresh_s",
    "ray.trainer_ranks",  # a checkpoint resumes on another rank count (the same run, float tolerance)
)
# Fields added after checkpoints already existed: left out of the hash while at these defaults,
# so a checkpoint written before they existed stays resumable by a config that does not use them.
HASH_LATER_DEFAULTS: dict[str, Any] = {
    "trainer.lr_schedule": {"kind": "constant", "warmup_steps": 0, "decay_steps": None, "min_lr_ratio": 0.0},
    "trainer.recompute_old_logprobs": False,
    "rollout.agent_config": "agent_workspace/agent_config.yaml",
}


# -- config hash --------------------------------------------------------------------------------
_ANY = object()


def _pop(data: dict[str, Any], dotted: str, if_equal: Any = _ANY) -> None:
    """Remove the `dotted` key of nested `data` (only when its value equals `if_equal`, if given)."""
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.get(key, {})
    if if_equal is _ANY or node.get(leaf) == if_equal:
        node.pop(leaf, None)


def hashed_config(cfg: NexRLConfig) -> dict[str, Any]:
    """The config as JSON data, less HASH_EXCLUDED and the HASH_LATER_DEFAULTS fields at their default."""
    data = cfg.model_dump(mode="json")
    for dotted in HASH_EXCLUDED:
        _pop(data, dotted)
    for dotted, default in HASH_LATER_DEFAULTS.items():
        _pop(data, dotted, default)
    return data


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(cfg: NexRLConfig) -> tuple[str, dict[str, str]]:
    """The run's config hash and the hash of each top-level key (to name which ones differ)."""
    data = hashed_config(cfg)
    return _digest(data), {key: _digest(value) for key, value in sorted(data.items())}


# -- files --------------------------------------------------------------------------------------
def fsync_file(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """torch.save to a temp file beside `path`, fsync, rename: `path` is the old file or the new one."""
    import tempfile

    import torch

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fsync_file(path)


def write_json(path: Path, data: Any) -> None:
    with path.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def step_of(path: Path) -> int | None:
    m = _NAME.fullmatch(path.name)
    return int(m.group(1)) if m else None


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(path: str | os.PathLike[str]) -> bool:
    """A checkpoint folder whose marker is there, parses, names its step, and whose files all have
    the sizes the marker records (a file cut short by a crash fails this)."""
    path = Path(path)
    marker = read_marker(path)
    if not marker or not isinstance(marker.get("files"), dict) or not isinstance(marker.get("step"), int):
        return False
    for name, size in marker["files"].items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            return False
    return step_of(path) in (None, marker["step"])


def complete_checkpoints(root: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, folder) of every complete `global_step_N` under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        step = step_of(child)
        if step is not None and child.is_dir() and is_complete(child):
            found.append((step, child))
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def remove_temps(root: str | os.PathLike[str]) -> list[Path]:
    """Delete the `.tmp-*` / `.trash-*` folders a killed save left behind; returns them."""
    root = Path(root)
    gone = [p for p in root.glob(".tmp-*")] + [p for p in root.glob(".trash-*")] if root.is_dir() else []
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def write_checkpoint(root: str | os.PathLike[str], step: int, write: Callable[[Path], None]) -> Path:
    """Atomically create `root/global_step_<step>`: `write(tmp)` fills a temp folder, the marker is
    written last (fsynced), then the folder is renamed into place (replacing an older one)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step}"
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        files = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                fsync_file(f)
                files[str(f.relative_to(tmp))] = f.stat().st_size
        write_json(tmp / MARKER, {"step": step, "files": files, "format": 1})
        _fsync_dir(tmp)
        if final.exists():  # e.g. a step redone after a resume from an earlier checkpoint
            trash = root / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# -- RNG states ---------------------------------------------------------------------------------
def global_rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON part: python, numpy; tensor part: torch CPU and CUDA) of this process's global RNGs."""
    import random

    import torch

    plain: dict[str, Any] = {"python": _listify(random.getstate())}
    if "numpy" in sys.modules:
        np_state = sys.modules["numpy"].random.get_state()
        plain["numpy"] = [np_state[0], np_state[1].tolist(), *np_state[2:]]
    tensors: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    return plain, tensors


def set_global_rng_state(plain: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
    import random

    import torch

    random.setstate(_tuplify(plain["python"]))
    if "numpy" in plain:
        import numpy as np

        kind, keys, *rest = plain["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])


def _listify(x: Any) -> Any:
    return [_listify(v) for v in x] if isinstance(x, tuple | list) else x


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


# -- pruning ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Saved:
    step: int
    metric: float | None = None  # the keep_best metric at that step (None: not logged then)


def to_prune(
    saved: Sequence[Saved],
    keep_last: int | None,
    best_mode: str | None = None,
    just_written: int | None = None,
) -> list[int]:
    """Steps to delete (pure). Keeps the `keep_last` newest (all when None), the one just written,
    and with `best_mode` ('max'/'min') the best by metric (the oldest of equals; steps with no
    finite metric are never best)."""
    if keep_last is None:
        return []
    steps = sorted({s.step for s in saved})
    keep = set(steps[-keep_last:])
    if just_written is not None:
        keep.add(just_written)
    scored = [s for s in saved if s.metric is not None and math.isfinite(s.metric)]
    if best_mode is not None and scored:
        sign = 1.0 if best_mode == "max" else -1.0
        best = max(scored, key=lambda s: (sign * float(s.metric), -s.step))  # type: ignore[arg-type]
        keep.add(best.step)
    return [s for s in steps if s not in keep]


def saved_metrics(root: Path, metric: str | None) -> list[Saved]:
    out = []
    for step, path in complete_checkpoints(root):
        value = None
        if metric is not None:
            with contextlib.suppress(OSError, ValueError):
                value = json.loads((path / STATE).read_text()).get("metrics", {}).get(metric)
        out.append(Saved(step, float(value) if isinstance(value, int | float) else None))
    return out


def prune(root: str | os.PathLike[str], cfg: NexRLConfig, just_written: int) -> list[int]:
    """Apply checkpoint.keep_last / keep_best under `root`; returns the deleted steps."""
    best = cfg.checkpoint.keep_best
    saved = saved_metrics(Path(root), best.metric if best else None)
    gone = to_prune(saved, cfg.checkpoint.keep_last, best.mode if best else None, just_written)
    for step in gone:
        target = Path(root) / f"{PREFIX}{step}"
        trash = Path(root) / f".trash-{target.name}-{uuid.uuid4().hex[:8]}"
        os.rename(target, trash)  # never a half-deleted folder under a checkpoint's name
        shutil.rmtree(trash, ignore_errors=True)
    return gone


# -- resume -------------------------------------------------------------------------------------
def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE).read_text(encoding="utf-8"))


def check_same_config(path: Path, cfg: NexRLConfig, field: str) -> None:
    """A ConfigError naming both hashes (and the differing top-level keys) if `path` was written by
    a run of another config."""
    ours, our_keys = config_hash(cfg)
    state = read_state(path)
    theirs = state.get("config_hash")
    if theirs == ours:
        return
    their_keys = state.get("config_key_hashes", {})
    differ = sorted(k for k in set(our_keys) | set(their_keys) if our_keys.get(k) != their_keys.get(k))
    raise ConfigError(
        f"{field}: {path} was written by a run of another config (config hash {theirs}, this run's is "
        f"{ours}; differing top-level keys: {', '.join(differ) or '?'}); resume it with that config, or "
        "set resume.mode=disable to start over"
    )


def resolve_resume(cfg: NexRLConfig) -> Path | None:
    """The checkpoint this run resumes from (None: a fresh start); ConfigError when `from_path`
    names a folder that is not a complete checkpoint of this config."""
    mode = cfg.resume.mode
    if mode == "disable":
        return None
    if mode == "auto":
        path = latest_checkpoint(cfg.checkpoint_dir)
        if path is not None:
            check_same_config(path, cfg, "resume.mode")
        return path
    assert cfg.resume.path is not None
    path = Path(cfg.resume.path)
    if not path.is_absolute() and not path.exists():
        path = Path(cfg.recipe_dir) / path
    if not path.is_dir():
        raise ConfigError(f"resume.path: {cfg.resume.path} is not a folder (want a {PREFIX}N checkpoint)")
    if not is_complete(path):
        raise ConfigError(
            f"resume.path: {path} is not a complete checkpoint (no valid {MARKER} marker, or a file of "
            "another size than the marker records: a save that was interrupted)"
        )
    check_same_config(path, cfg, "resume.path")
    return path


# -- export -------------------------------------------------------------------------------------
def export_hf(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the checkpoint's policy as an HF folder (config, model.safetensors, tokenizer) that
    `model.kind: hf, model.path: OUT` (the repo's model factory) and vLLM load."""
    from nexrl_runtime.models import build_policy
    from nexrl_runtime.trainer.dcp_checkpoint import load_model_weights

    checkpoint, out = Path(checkpoint), Path(out)
    if not is_complete(checkpoint):
        raise ValueError(f"{checkpoint} is not a complete checkpoint")
    cfg = NexRLConfig.model_validate(json.loads((checkpoint / CONFIG).read_text()))
    model, tok = build_policy(cfg.model.model_copy(update={"device": "cpu"}))
    load_model_weights(model, checkpoint)  # either trainer format
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


__all__ = [
    "HASH_EXCLUDED",
    "HASH_LATER_DEFAULTS",
    "MARKER",
    "Saved",
    "atomic_torch_save",
    "complete_checkpoints",
    "config_hash",
    "export_hf",
    "is_complete",
    "latest_checkpoint",
    "prune",
    "resolve_resume",
    "to_prune",
    "write_checkpoint",
]
