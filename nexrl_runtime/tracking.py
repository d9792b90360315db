"""Metrics: one JSON line per step to a file, a console line, sinks (e.g. the job status reporter),
and a reward/accuracy PNG at the end."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from tqdm import tqdm


class TrackerSink(Protocol):
    """Gets every RL step's metrics (not the warm start's), and close() once at the end."""

    def on_step(self, step: int, metrics: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class Tracker:
    """Appends step metrics to `metrics.jsonl` in the run folder and echoes selected ones.

    While `bar` is set (the controller's progress bar, when it is on), console lines are written
    through it (`tqdm.write`: the bar is cleared, the line printed, the bar redrawn), so they do not
    land on a half-drawn bar."""

    CONSOLE_KEYS = ("reward_mean", "accuracy", "val_accuracy", "loss", "policy_version", "step_seconds")

    def __init__(self, output_dir: str | Path, console_every: int = 1, echo: TextIO | None = None,
                 sinks: Sequence[TrackerSink] = ()):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self.console_every = console_every
        self.echo = echo
        self.history: list[dict[str, Any]] = []
        self.sinks = list(sinks)
        self.bar: tqdm | None = None

    def log(self, step: int, metrics: dict[str, Any], phase: str = "rl") -> None:
        row = {"step": step, "phase": phase, **metrics}
        self.history.append(row)
        self._file.write(json.dumps(row, default=float) + "\n")
        self._file.flush()
        if self.echo is not None and (step % self.console_every == 0 or "val_accuracy" in metrics):
            shown = " ".join(f"{k}={_fmt(metrics[k])}" for k in self.CONSOLE_KEYS if k in metrics)
            self._echo(f"[{phase} step {step}] {shown}")
        if phase == "rl":
            for sink in self.sinks:
                sink.on_step(step, metrics)

    def resume_at(self, step: int) -> list[dict[str, Any]]:
        """Continue the series of a run resumed after RL step `step`: rows of later steps (a killed
        run's) and a line cut short by the kill are removed from metrics.jsonl (rewritten
        atomically); the kept rows become `history`, so the curves show one series."""
        self._file.close()
        kept, lines = [], []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("phase") == "rl" and row.get("step", 0) > step:
                continue
            kept.append(row)
            lines.append(line)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
        tmp.replace(self.path)
        self._file = self.path.open("a", encoding="utf-8")
        self.history = kept
        return kept

    def _echo(self, line: str) -> None:
        assert self.echo is not None
        if self.bar is None:
            print(line, file=self.echo, flush=True)
        else:
            tqdm.write(line, file=self.echo)
            self.echo.flush()

    def close(self) -> None:
        self._file.close()
        for sink in self.sinks:
            sink.close()

    def plot(self, filename: str = "curves.png") -> Path | None:
        """Training reward and held-out accuracy against step; None when nothing was logged."""
        rows = [r for r in self.history if r.get("phase") == "rl"]
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        same = all(r.get("accuracy") == r.get("reward_mean") for r in rows)  # 0/1 rewards: one line
        for key, label in (("reward_mean", "train reward"), ("accuracy", "train accuracy")):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts and not (same and key == "accuracy"):
                ax.plot(*zip(*pts, strict=True), label=label, alpha=0.6)
        val = [(r["step"], r["val_accuracy"]) for r in self.history if "val_accuracy" in r]
        if val:
            ax.plot(*zip(*val, strict=True), "o-", label="held-out accuracy (greedy)")
        ax.set_xlabel("RL step")
        ax.set_ylim(-0.02, max(1.02, max(r.get("reward_mean", 0) for r in rows) + 0.05))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        out = self.dir / filename
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out


def _fmt(v: Any) -> str:
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.4g}"
    return str(v)
