"""A NexRLJob twin run in the box as a user runs it: `kubectl apply`, then `kubectl get nexrljobs`
until it ends; what the user saw, with the time of each change (for the test and bench/box.py)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import pathlib
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import yaml
from box import Box
from harness import wait_for

DONE = ("Succeeded", "Failed")
CHART_VALUES = {"runtime": {"namespaces": ["team-a", "team-b", "team-kueue"]}}
"""The chart's values for a box the twins run in: the runtime's ServiceAccount in their namespaces."""


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
    """A row of kubectl's table by its header's column offsets (empty cells stay empty). Only for a
    header and rows printed together: `get -w` pads each later row by its own widths."""
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(names, cells, strict=True))


def table_row(box: Box, namespace: str, name: str) -> dict[str, str]:
    """`kubectl get nexrljobs <name>`: the CRD's printer columns as the API server's Table gives them."""
    header, line = box.kubectl("get", "nexrljobs", "-n", namespace, name).stdout.splitlines()
    return parse_row(header, line)


def number(cell: str, kind: type[int] | type[float]) -> int | float | None:
    return kind(cell) if cell else None


WATCHED = "custom-columns=PHASE:.status.phase,STEP:.status.step,REWARD:.status.reward"
"""The printer columns the watch reads (the same paths as the CRD's), one word each (`<none>` if unset)."""


def apply_twin(box: Box, manifest: pathlib.Path) -> float:
    """`kubectl apply` the twin; the monotonic time it was applied at."""
    started = time.monotonic()
    box.kubectl("apply", "-f", str(manifest))
    return started


def watch_twin(box: Box, namespace: str, name: str, started: float, timeout: float = 480) -> Run:
    """`kubectl get nexrljobs -w` until the job is Succeeded or Failed: every change the API server
    streams is a row (timed from `started`), so no step is missed between polls. At the end, the
    table `kubectl get nexrljobs` prints shows the last phase, step and reward."""
    kubectl = box.kubectl
    command = kubectl.command("get", "nexrljobs", "-n", namespace, name, "-w", "-o", WATCHED)
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubectl.kubeconfig)},
    )
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
            phase, step, reward = (None if cell == "<none>" else cell for cell in line.split())
            row = Row(
                round(time.monotonic() - started, 1),
                phase or "",
                int(step) if step else None,
                float(reward) if reward else None,
            )
            seen = (row.phase, row.step, row.reward)
            if not rows or seen != (rows[-1].phase, rows[-1].step, rows[-1].reward):
                rows.append(row)
            if row.phase in DONE:
                table = table_row(box, namespace, name)
                shown = (table["PHASE"], number(table["STEP"], int), number(table["REWARD"], float))
                assert shown == (row.phase, row.step, row.reward), (table, row)
                return Run(rows)
        raise AssertionError(f"{namespace}/{name} did not finish in {timeout}s; seen: {rows}")
    finally:
        proc.kill()
        proc.wait()


def run_twin(box: Box, manifest: pathlib.Path, namespace: str, name: str, timeout: float = 480) -> Run:
    """Apply a twin and watch it to its end."""
    with deleted_on_failure(box, namespace, name):
        return watch_twin(box, namespace, name, apply_twin(box, manifest), timeout)


@contextlib.contextmanager
def deleted_on_failure(box: Box, namespace: str, name: str) -> Iterator[None]:
    """A twin that fails its test is deleted (its pods go with it), so that the next twin in the
    box does not run beside its vLLM servers (no cgroups here: Ray's OOM killer sees the host)."""
    try:
        yield
    except BaseException:
        box.kubectl("delete", "nexrljob", "-n", namespace, name, "--wait=false", check=False)
        raise


Workload = tuple[str, str, int]
"""(kind, name suffix after the job's name, replicas): e.g. ("Deployment", "inference", 2)."""


def run_twin_keeping_pods(
    box: Box,
    manifest: pathlib.Path,
    namespace: str,
    name: str,
    workloads: list[Workload],
    timeout: float = 900,
) -> tuple[Run, dict[str, list[Any]]]:
    """Apply and watch a twin, and keep its workloads' pods by suffix (the operator scales them to 0
    once the job has finished, so they are taken while it runs; their logs stay on disk)."""
    started = apply_twin(box, manifest)
    keys = [((kind, namespace, f"{name}-{suffix}"), n) for kind, suffix, n in workloads]
    with deleted_on_failure(box, namespace, name), concurrent.futures.ThreadPoolExecutor(1) as pool:
        watched = pool.submit(watch_twin, box, namespace, name, started, timeout)

        def all_there() -> bool:
            return all(len(box.workloads.pods.get(key, ())) == n for key, n in keys)

        wait_for(lambda: all_there() or watched.done(), timeout, interval=0.2, what=f"the pods of {name}")
        pods = {key[2].removeprefix(f"{name}-"): list(box.workloads.pods.get(key, ())) for key, _ in keys}
        return watched.result(), pods


GSM8K_ROWS = [
    {
        "prompt": f"<|im_start|>user\nWhat is {a} + {b}? Put the answer in \\boxed{{}}.<|im_end|>\n"
        "<|im_start|>assistant\n",
        "question": f"What is {a} + {b}?",  # the agent recipe's user_prompt
        "answer": str(a + b),
    }
    for a, b in ((2, 3), (10, 7), (4, 4), (6, 9))
]


def seed_claim(box: Box, namespace: str, claim: str) -> pathlib.Path:
    """A claim's folder as the GSM8K-shaped twins expect it: the converted model under models/ and
    GSM8K-shaped data under gsm8k/ (for a claim the operator creates, before it exists)."""
    from nexrl_runtime.models.convert import convert

    folder = box.workdir / "pvc" / namespace / claim
    (folder / "models").mkdir(parents=True, exist_ok=True)
    link = folder / "models" / "SmolLM2-135M-Instruct"
    if not link.exists():
        link.symlink_to(convert())  # cached after the first conversion; the pods see the host's files
    (folder / "gsm8k").mkdir(exist_ok=True)
    for split in ("train", "test"):
        (folder / "gsm8k" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    return folder


def prepare_claim(box: Box, namespace: str, claim: str) -> None:
    """An existing claim (`storage.existingClaim`): its seeded folder and its PVC object."""
    seed_claim(box, namespace, claim)
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    path = box.workdir / f"pvc-{namespace}-{claim}.yaml"
    path.write_text(yaml.safe_dump(pvc))
    box.kubectl("apply", "-f", str(path))


def prepare_storage(box: Box, job: dict[str, Any]) -> None:
    """A twin's storage seeded before it is applied: its existing claim, or the folder of the claim
    the operator will make for `storage.size` (`<name>-data`); nothing without storage."""
    meta, spec = job["metadata"], job["spec"]
    storage = spec.get("storage") or {}
    if storage.get("existingClaim"):
        prepare_claim(box, meta["namespace"], storage["existingClaim"])
    elif storage:
        seed_claim(box, meta["namespace"], f"{meta['name']}-data")
