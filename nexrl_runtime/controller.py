"""Controller: wires the modules a recipe names, runs warm start + the RL loop, stops cleanly."""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch
from tqdm import tqdm

from nexrl_runtime import checkpoint as ckpt
from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.config.start import check_start
from nexrl_runtime.data.loader import DataLoader
from nexrl_runtime.data.readers import load_items
from nexrl_runtime.errors import ErrorBook, RunStopped
from nexrl_runtime.held_out import evaluate_held_out, held_out_items
from nexrl_runtime.inference import build_engine
from nexrl_runtime.inference.base import InferenceEngine
from nexrl_runtime.loggers import backend_sinks
from nexrl_runtime.models import build_policy
from nexrl_runtime.pool import TrajectoryPool
from nexrl_runtime.registry import load_object, resolve_class
from nexrl_runtime.reporting import status_sinks
from nexrl_runtime.rollout.evaluator import Evaluator, make_evaluator
from nexrl_runtime.rollout.manager import RolloutManager
from nexrl_runtime.rollout.worker import WORKERS, RolloutWorker
from nexrl_runtime.tracking import Tracker
from nexrl_runtime.trainer import TRAINERS, Trainer
from nexrl_runtime.trainer.factory import TrainerLike, build_trainer
from nexrl_runtime.types import Batch
from nexrl_runtime.warm_start import warm_start
from nexrl_runtime.weight_sync import WeightSync


@dataclass
class RunSummary:
    """What a run achieved; the CLI prints it and tests assert on it."""

    steps: int = 0
    val_after_warm_start: dict[str, float] = field(default_factory=dict)
    val_final: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    output_dir: str = ""


class Controller:
    """Builds every module from the config (so config errors surface before any work), then runs.

    The `_build_*` hooks make the modules; RayController (launch_mode=ray, in
    nexrl_runtime/distributed/ray_controller.py) overrides them with actor-backed stand-ins and
    reuses everything else. nexrl_runtime/launch.py picks between the two."""

    launch_modes: tuple[str, ...] = ("local",)

    def __init__(self, config: NexRLConfig, echo: TextIO | None = sys.stdout):
        if config.launch_mode not in self.launch_modes:
            raise NotImplementedError(
                f"{type(self).__name__} runs {self.launch_modes}; use nexrl_runtime.launch.run_recipe"
            )
        check_start(config)
        self.resume_from = ckpt.resolve_resume(config)  # a bad resume.path fails before any work
        self.cfg = config
        self.echo = echo
        base = config.recipe_dir
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        if config.threads:
            torch.set_num_threads(config.threads)
        evaluator_cls = resolve_class(config.rollout.evaluator, {}, Evaluator, base, "rollout.evaluator")
        worker_cls = resolve_class(config.rollout.worker, WORKERS, RolloutWorker, base, "rollout.worker")
        self.trainer_cls: type[Trainer] = resolve_class(config.trainer.type, TRAINERS, Trainer, base,
                                                        "trainer.type")
        self.evaluator = make_evaluator(evaluator_cls)
        self.model, self.tokenizer = build_policy(config.model)
        self.engine = self._build_engine()
        self.sync = WeightSync(config.weight_sync, [self.engine])
        self.errors = ErrorBook(config.errors)
        probe = worker_cls(self.engine, self.tokenizer, self.evaluator, config.rollout, config.run_name)
        self.loader = DataLoader(
            config.data,
            base,
            prompt_length=lambda item: len(probe.build_prompt(item)),
            max_prompt_length=config.rollout.max_sequence_length - 1,  # room for one response token
        )
        if config.warm_start.steps and self.resume_from is None:
            self.loader.require_key(config.warm_start.answer_key, "warm_start.answer_key")
        self.pool = TrajectoryPool.from_config(config)
        self.workers = self._build_workers(worker_cls)
        for w in self.workers:
            if isinstance(w, RolloutWorker):  # actor stand-ins (ray) keep raising to the manager
                w.errors = self.errors
        self.validator = self.workers[0]
        v = config.validation
        rows = load_items(Path(base) / v.path, limit=v.limit, field="validation.path") if v.path else []
        self.val_items = held_out_items(rows, config.data.prompt_key)
        sinks: list = list(status_sinks(config.cluster, interval_s=config.logging.status_every_s))
        sinks += backend_sinks(config)
        self.prometheus = None
        if config.logging.metrics_port is not None:  # last: a port in use fails before any work
            from nexrl_runtime.prom import PrometheusSink

            self.prometheus = PrometheusSink(config.logging.metrics_port, config.logging.metrics_host)
            sinks.append(self.prometheus)
            self.prometheus.watch_pool(lambda: float(self.pool.stats()["held"]))
            self._say(f"metrics: http://{config.logging.metrics_host}:{self.prometheus.port}/metrics")
        self.tracker = Tracker(config.output_dir, config.logging.console_every, echo, sinks=sinks)

    def _build_engine(self) -> InferenceEngine:
        return build_engine(self.cfg, self.model, self.tokenizer)

    def _build_workers(self, worker_cls: type[RolloutWorker]) -> list[RolloutWorker]:
        cfg = self.cfg
        return [
            worker_cls(self.engine, self.tokenizer, self.evaluator, cfg.rollout, cfg.run_name)
            for _ in range(cfg.rollout.num_workers)
        ]

    def _build_trainer(self) -> TrainerLike:
        """Called after the warm start, so the trainer starts from the warm-started weights
        (in training-service mode they are uploaded to the service)."""
        return build_trainer(self.cfg, self.model, self.tokenizer)

    def _say(self, msg: str) -> None:
        if self.echo is not None:
            print(msg, file=self.echo, flush=True)

    def _validate(self) -> dict[str, float]:
        return (
            evaluate_held_out(self.validator, self.val_items, greedy=self.cfg.validation.greedy)
            if self.val_items
            else {}
        )

    def run(self) -> RunSummary:
        summary = RunSummary(output_dir=str(self.tracker.dir))
        start = time.perf_counter()
        manager: RolloutManager | None = None
        try:
            if self.cfg.checkpoint.every:
                ckpt.remove_temps(self.cfg.checkpoint_dir)  # what a killed save left behind
            if self.resume_from is None:
                self._warm_start(summary)
            trainer = self._build_trainer()
            manager = RolloutManager(self.workers, self.loader, self.pool, self.sync, self.errors)
            first = 1
            if self.resume_from is not None:
                first = self._restore(trainer, manager, self.resume_from) + 1
                summary.steps = first - 1
            manager.start()
            self._loop(trainer, manager, summary, first)
        except KeyboardInterrupt:
            summary.interrupted = True
            self._say("interrupted: stopping cleanly")
        finally:
            self.pool.close()
            if manager is not None:
                manager.stop()
            self.engine.close()  # stops servers it started (inference.engine=vllm)
            summary.seconds = time.perf_counter() - start
            pool = self.pool.stats()
            summary.stats = {
                **self.sync.stats(),
                **{f"pool_{k}": pool[k] for k in ("received", "released", "batches")},
            }
            self.tracker.close()
            if self.cfg.logging.plot:
                self.tracker.plot()
        if manager is not None and manager.error is not None:
            if isinstance(manager.error, RunStopped):
                raise manager.error
            raise RuntimeError(f"rollout failed: {manager.error!r}") from manager.error
        return summary

    def _warm_start(self, summary: RunSummary) -> None:
        ws = self.cfg.warm_start
        if ws.steps:
            data = self.cfg.data.model_copy(update={"batch_size": ws.batch_size, "rollout_repeat_n": 1})
            self._say(f"warm start: {ws.steps} supervised steps")
            warm_start(
                self.model,
                self.tokenizer,
                DataLoader(data, self.cfg.recipe_dir),
                ws,
                on_step=lambda s, m: self.tracker.log(s, m, phase="warm_start") if s % 50 == 0 else None,
            )
            self.engine.load_weights(self.model.state_dict(), self.sync.version)
        summary.val_after_warm_start = self._validate()
        if summary.val_after_warm_start:
            self.tracker.log(0, summary.val_after_warm_start)

    def _loop(
        self, trainer: TrainerLike, manager: RolloutManager, summary: RunSummary, first: int = 1
    ) -> None:
        cfg = self.cfg
        bar = tqdm(
            total=cfg.total_steps,
            initial=first - 1,
            desc="RL",
            disable=not cfg.logging.progress_bar,
            file=sys.stderr,
        )
        self.tracker.bar = None if bar.disable else bar  # console lines go through the bar
        try:
            for step in range(first, cfg.total_steps + 1):
                t0 = time.perf_counter()
                batch = self._next_fresh_batch(manager, step)
                if batch is None:
                    break
                wait = time.perf_counter() - t0
                lags = [self.sync.version - t.policy_version for t in batch.trajectories]
                t1 = time.perf_counter()
                metrics = trainer.train_step(batch)
                train_s = time.perf_counter() - t1
                self._check_finite(step, metrics)
                sync_s = self.sync.push(trainer.state_dict()) if self.sync.should_push(step) else 0.0
                # the run state of a checkpoint is taken before the gate opens the next rollout
                snapshot = self._snapshot(manager) if self._checkpoint_due(step) else None
                self.sync.step_done(step)
                rollout = manager.timings.popleft() if manager.timings else {}
                metrics.update(
                    self._batch_metrics(batch),
                    **rollout,
                    train_seconds=train_s,
                    sync_seconds=sync_s,
                    wait_seconds=wait,
                    **self.sync.stats(),
                    **self.errors.metrics(),
                    filtered_too_long=float(self.loader.filtered_too_long),
                    dropped_with_failed=float(manager.dropped_with_failed),
                )
                if step % cfg.validation.every == 0 or step == cfg.total_steps:
                    metrics.update(self._validate())
                    val_keys = ("val_accuracy", "val_reward")
                    summary.val_final = {k: metrics[k] for k in val_keys if k in metrics}
                metrics["step_seconds"] = time.perf_counter() - t0
                metrics.update(
                    staleness_max=float(max(lags)),
                    staleness_mean=sum(lags) / len(lags),
                )
                self.tracker.log(step, metrics)
                if snapshot is not None:  # after the step's metrics row: checkpoint N implies row N
                    self._save_checkpoint(trainer, step, snapshot, metrics)
                summary.steps = step
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", v=self.sync.version)
        finally:
            self.tracker.bar = None
            bar.close()

    def _check_finite(self, step: int, metrics: dict[str, float]) -> None:
        """The trainer skips an optimizer step whose gradient norm is NaN/inf (a NaN loss or
        advantage makes it so): count those (`errors_nonfinite`), or stop (errors.on_nonfinite)."""
        skipped = int(metrics.get("skipped_steps", 0))
        bad_loss = not math.isfinite(float(metrics.get("loss", 0.0)))
        if not skipped and not bad_loss:
            return
        self.errors.count("nonfinite", max(skipped, 1))
        if self.cfg.errors.on_nonfinite == "stop":
            raise RunStopped(
                f"step {step}: non-finite loss={metrics.get('loss')} / grad_norm={metrics.get('grad_norm')} "
                f"({skipped} optimizer step(s) skipped; errors.on_nonfinite=stop)"
            )

    # -- checkpoints ----------------------------------------------------------------------------
    def _checkpoint_due(self, step: int) -> bool:
        every = self.cfg.checkpoint.every
        return bool(every) and (step % every == 0 or step == self.cfg.total_steps)

    def _snapshot(self, manager: RolloutManager) -> dict:
        """The driver's run state after a step's update and push, before the next rollout starts
        (in sync mode the producer is then waiting at the gate, so the pool is empty)."""
        plain, tensors = ckpt.global_rng_state()
        return {
            "manager": manager.snapshot(),
            "rng": plain,
            "rng_tensors": {**tensors, "engines": self.engine.rng_states()},
            "weight_sync": {
                "policy_version": self.sync.version,
                "pushes": self.sync.pushes,
                "dropped_stale": self.sync.dropped_stale,
                "rerolled_stale": self.sync.rerolled_stale,
            },
            "errors": dict(self.errors.counts),
        }

    def _save_checkpoint(self, trainer: TrainerLike, step: int, snapshot: dict, metrics: dict) -> Path:
        start = time.perf_counter()
        digest, key_digests = ckpt.config_hash(self.cfg)

        def write(tmp: Path) -> None:
            held = trainer.save_checkpoint(tmp)  # type: ignore[attr-defined]
            if held != step:
                raise RuntimeError(f"the trainer holds {held} updates at RL step {step}")
            torch.save(snapshot["rng_tensors"], tmp / ckpt.RNG)
            state = {
                "step": step,
                "weight_sync": snapshot["weight_sync"],
                "manager": snapshot["manager"],
                "rng": snapshot["rng"],
                "errors": snapshot["errors"],
                "mode": self.cfg.weight_sync.mode,
                "config_hash": digest,
                "config_key_hashes": key_digests,
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
            }
            ckpt.write_json(tmp / ckpt.STATE, state)
            ckpt.write_json(tmp / ckpt.CONFIG, self.cfg.model_dump(mode="json"))

        root = Path(self.cfg.checkpoint_dir)
        path = ckpt.write_checkpoint(root, step, write)
        if self.cfg.checkpoint.export_hf:
            ckpt.export_hf(path, path / "hf")
        gone = ckpt.prune(root, self.cfg, step)
        pruned = f", pruned steps {gone}" if gone else ""
        self._say(f"checkpoint: {path} ({time.perf_counter() - start:.2f} s{pruned})")
        return path

    def _restore(self, trainer: TrainerLike, manager: RolloutManager, path: Path) -> int:
        """Load checkpoint `path` into the trainer, engines, weight sync, data stream, RNGs and
        metrics file; returns its step N (the loop goes on at N + 1; the warm start is not redone)."""
        state = ckpt.read_state(path)
        step = int(state["step"])
        held = trainer.load_checkpoint(path)  # type: ignore[attr-defined]
        if held != step:
            raise RuntimeError(f"{path}: the trainer state holds {held} updates, the run state {step}")
        ws = state["weight_sync"]
        self.sync.version = int(ws["policy_version"])
        self.sync.pushes = int(ws["pushes"])
        self.sync.dropped_stale = int(ws["dropped_stale"])
        self.sync.rerolled_stale = int(ws["rerolled_stale"])
        self.sync.steps_done = step
        self.errors.counts.update({k: int(v) for k, v in state.get("errors", {}).items()})
        manager.restore(state["manager"], batches_started=step, batch_size=self.cfg.data.batch_size)
        tensors = torch.load(path / ckpt.RNG, weights_only=True)
        ckpt.set_global_rng_state(state["rng"], tensors)
        self.engine.load_weights(trainer.state_dict(), self.sync.version)
        if tensors.get("engines"):
            self.engine.set_rng_states(tensors["engines"])
        self.tracker.resume_at(step)
        self._say(f"resumed from {path}: step {step}, policy version {self.sync.version}")
        return step

    def _next_fresh_batch(self, manager: RolloutManager, step: int) -> Batch | None:
        """The next pool batch minus over-stale groups (dropped, or re-rolled into later batches)."""
        while True:
            batch = self.pool.get_batch(timeout=None)
            if batch is None:
                if isinstance(manager.error, RunStopped):
                    raise manager.error
                if manager.error is not None:
                    raise RuntimeError(f"rollout failed: {manager.error!r}") from manager.error
                return None
            stale = {t.group_id for t in batch.trajectories if self.sync.is_stale(t.policy_version)}
            fresh = [t for t in batch.trajectories if t.group_id not in stale]
            if stale:
                self.sync.record_stale(len(batch) - len(fresh))
                (manager.reroll if self.cfg.weight_sync.on_stale == "reroll" else manager.forget)(stale)
            manager.forget({t.group_id for t in fresh})
            if fresh:
                return Batch(fresh, step=step, metadata={"policy_version": self.sync.version})

    @staticmethod
    def _batch_metrics(batch: Batch) -> dict[str, float]:
        judged = [t.extra.get("correct") for t in batch.trajectories if t.extra.get("correct") is not None]
        out = {"batch_size": float(len(batch))}
        if judged:
            out["accuracy"] = sum(map(bool, judged)) / len(judged)
        sums: dict[str, list[float]] = {}  # the evaluator's own metrics, as batch means
        for t in batch.trajectories:
            for k, v in (t.extra.get("eval_metrics") or {}).items():
                if isinstance(v, int | float):
                    sums.setdefault(k, []).append(float(v))
        out.update({f"eval/{k}": sum(v) / len(v) for k, v in sums.items()})
        return out


__all__ = ["Controller", "RunSummary", "load_object"]
