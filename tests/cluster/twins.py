"""A NexRLJob twin run in the box as a user runs it: `kubectl apply`, then `kubectl get nexrljobs`
until it ends; what the user saw, with the time of each change (for the test and bench/box.py)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import queue
import subprocess
import threading
import time

from box import Box

DONE = ("Succeeded", "Failed")


@dataclasses.dataclass
class Row:
    """One `kubectl get nexrljobs` row: seconds since the apply, then the printer columns."""

    t: float
    phase: str
    step: int | None
    reward: float | None


@dataclasses.dataclass
class Run:
    rows: list[Row]

    def phases(self) -> list[str]:
        out: list[str] = []
        for row in self.rows:
            if row.phase and (not out or out[-1] != row.phase):
                out.append(row.phase)
        return out

    @property
    def first_step_s(self) -> float | None:
        return next((r.t for r in self.rows if r.step), None)

    @property
    def done_s(self) -> float | None:
        return next((r.t for r in self.rows if r.phase in DONE), None)


def parse_row(header: str, line: str) -> dict[str, str]:
    """A row of kubectl's table by its header's column offsets (empty cells stay empty)."""
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(names, cells, strict=True))


def apply_twin(box: Box, manifest: pathlib.Path) -> float:
    """`kubectl apply` the twin; the monotonic time it was applied at."""
    started = time.monotonic()
    box.kubectl("apply", "-f", str(manifest))
    return started


def watch_twin(box: Box, namespace: str, name: str, started: float, timeout: float = 480) -> Run:
    """`kubectl get nexrljobs -w` until the job is Succeeded or Failed: every change the API server
    streams is a row (timed from `started`), so no step is missed between polls."""
    kubectl = box.kubectl
    proc = subprocess.Popen(kubectl.command("get", "nexrljobs", "-n", namespace, name, "-w"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "KUBECONFIG": str(kubectl.kubeconfig)})
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, name="kubectl-watch", daemon=True).start()
    rows: list[Row] = []
    header: str | None = None
    try:
        while (left := timeout - (time.monotonic() - started)) > 0:
            if box.errors:
                raise AssertionError(f"the box failed: {box.errors[-1]}")
            try:
                line = lines.get(timeout=min(left, 5.0))
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"kubectl get -w ended ({proc.wait()}): {proc.stderr.read()}")
            if header is None:
                header = line
                continue
            cells = parse_row(header, line)
            row = Row(
                round(time.monotonic() - started, 1),
                cells.get("PHASE", ""),
                int(cells["STEP"]) if cells.get("STEP") else None,
                float(cells["REWARD"]) if cells.get("REWARD") else None,
            )
            seen = (row.phase, row.step, row.reward)
            if not rows or seen != (rows[-1].phase, rows[-1].step, rows[-1].reward):
                rows.append(row)
            if row.phase in DONE:
                return Run(rows)
        raise AssertionError(f"{namespace}/{name} did not finish in {timeout}s; seen: {rows}")
    finally:
        proc.kill()
        proc.wait()


def run_twin(box: Box, manifest: pathlib.Path, namespace: str, name: str, timeout: float = 480) -> Run:
    """Apply a twin and watch it to its end."""
    return watch_twin(box, namespace, name, apply_twin(box, manifest), timeout)
