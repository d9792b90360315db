"""A NexRLJob twin run in the box as a user runs it: `kubectl apply`, then `kubectl get nexrljobs`
until it ends; what the user saw, with the time of each change (for the test and bench/box.py)."""

from __future__ import annotations

import dataclasses
import pathlib
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
    """Watch `kubectl get nexrljobs` until the job is Succeeded or Failed (rows timed from `started`)."""
    rows: list[Row] = []
    while time.monotonic() - started < timeout:
        out = box.kubectl("get", "nexrljobs", "-n", namespace, name).stdout.splitlines()
        cells = parse_row(out[0], out[1])
        row = Row(
            round(time.monotonic() - started, 1),
            cells.get("PHASE", ""),
            int(cells["STEP"]) if cells.get("STEP") else None,
            float(cells["REWARD"]) if cells.get("REWARD") else None,
        )
        if not rows or (row.phase, row.step, row.reward) != (rows[-1].phase, rows[-1].step, rows[-1].reward):
            rows.append(row)
        if row.phase in DONE:
            return Run(rows)
        if box.errors:
            raise AssertionError(f"the box failed: {box.errors[-1]}")
        time.sleep(0.5)  # a poll interval, not a wait for something: the loop ends on a condition
    raise AssertionError(f"{namespace}/{name} did not finish in {timeout}s; seen: {rows}")


def run_twin(box: Box, manifest: pathlib.Path, namespace: str, name: str, timeout: float = 480) -> Run:
    """Apply a twin and watch it to its end."""
    return watch_twin(box, namespace, name, apply_twin(box, manifest), timeout)
