"""Running the model's tool calls: arguments checked against the tool's schema, each call under
its tool's timeout, the calls of one turn concurrently. A failure (unknown tool, bad arguments,
an exception, a timeout) becomes the call's result text, shown to the model, never a crash.

A sync tool runs on a daemon thread (of a pool); on timeout the model is told at once, but the
thread cannot be killed and runs on until the function returns (being a daemon, it does not keep
the process alive). Async tools are cancelled."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.registry import RegistryError, load_object
from nexrl_runtime.rollout.agent.config import AgentConfig, ToolSpec
from nexrl_runtime.rollout.agent.parsing import ToolCall

Status = Literal["ok", "error", "timeout", "invalid", "unknown", "unparsed"]

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


@dataclass(frozen=True)
class ToolOutcome:
    """A call and what came of it; `result` is the text the model is shown."""

    call: ToolCall
    result: str
    status: Status
    seconds: float = 0.0


def check_arguments(spec: ToolSpec, args: dict[str, Any]) -> str | None:
    """What is wrong with `args` under the tool's schema (required keys, known keys when
    additionalProperties is false, top-level types, enums), or None. A subset of JSON schema."""
    schema = spec.parameters
    props: dict[str, Any] = schema.get("properties", {})
    missing = [k for k in schema.get("required", []) if k not in args]
    if missing:
        return f"missing required argument(s) {missing}"
    if schema.get("additionalProperties") is False:
        extra = sorted(set(args) - set(props))
        if extra:
            return f"unknown argument(s) {extra}; known: {sorted(props)}"
    for key, value in args.items():
        sub = props.get(key)
        if not isinstance(sub, dict):
            continue
        kind = sub.get("type")
        ok = _PY_TYPES.get(kind, (object,)) if isinstance(kind, str) else (object,)
        if not isinstance(value, ok) or (kind in ("integer", "number") and isinstance(value, bool)):
            return f"argument {key!r} must be of type {kind} (got {type(value).__name__} {value!r})"
        if "enum" in sub and value not in sub["enum"]:
            return f"argument {key!r} must be one of {sub['enum']} (got {value!r})"
    return None


def as_text(value: Any) -> str:
    """A tool's return value as the text the model sees."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


class DaemonPool:
    """Daemon threads for sync tools, kept for reuse (starting a thread costs milliseconds on a
    busy machine); a new one starts when none is idle, so a hung call never blocks the others."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            spawn = self._idle == 0
            self._idle -= 0 if spawn else 1
        if spawn:
            threading.Thread(target=self._serve, name="agent-tool", daemon=True).start()
        self._queue.put(job)

    def _serve(self) -> None:
        while True:
            self._queue.get()()
            with self._lock:
                self._idle += 1

    def run(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """`fn()` on a pool thread; the future (of the running loop) gets its outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not future.done():  # cancelled by a timeout: nobody waits any more
                (future.set_result if ok else future.set_exception)(value)

        def job() -> None:
            try:
                value, ok = fn(), True
            except BaseException as err:
                value, ok = err, False
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle, ok, value)

        self.submit(job)
        return future


class ToolBox:
    """The recipe's tools, loaded once; `run_all` runs one turn's calls."""

    def __init__(self, config: AgentConfig, recipe_dir: str | Path) -> None:
        self.specs = {t.name: t for t in config.tools}
        self.functions: dict[str, Callable[..., Any]] = {}
        for i, spec in enumerate(config.tools):
            try:
                fn = load_object(spec.entry_point, recipe_dir)
            except RegistryError as err:
                raise ConfigError(f"agent config tools[{i}].entry_point: {err}") from None
            if not callable(fn):
                where = f"agent config tools[{i}].entry_point"
                raise ConfigError(f"{where}: {spec.entry_point!r} is not a function")
            self.functions[spec.name] = fn
        self._pool = DaemonPool()

    async def run_all(self, calls: list[ToolCall]) -> list[ToolOutcome]:
        return list(await asyncio.gather(*(self.run(c) for c in calls)))

    async def run(self, call: ToolCall) -> ToolOutcome:
        if call.error is not None:
            return ToolOutcome(call, f"error: {call.error}", "unparsed")
        spec = self.specs.get(call.name)
        if spec is None:
            known = sorted(self.specs)
            return ToolOutcome(call, f"error: unknown tool {call.name!r}; tools: {known}", "unknown")
        problem = check_arguments(spec, call.arguments)
        if problem is not None:
            return ToolOutcome(call, f"error: {problem}", "invalid")
        fn = self.functions[call.name]
        start = time.perf_counter()
        try:
            if inspect.iscoroutinefunction(fn):
                value = await asyncio.wait_for(fn(**call.arguments), spec.timeout_s)
            else:
                running = self._pool.run(functools.partial(fn, **call.arguments))
                value = await asyncio.wait_for(running, spec.timeout_s)
        except TimeoutError:
            took = time.perf_counter() - start
            return ToolOutcome(call, f"error: the tool timed out after {spec.timeout_s} s", "timeout", took)
        except Exception as err:  # any tool failure is the model's to read, not the run's to die of
            took = time.perf_counter() - start
            return ToolOutcome(call, f"error: {type(err).__name__}: {err}", "error", took)
        return ToolOutcome(call, as_text(value), "ok", time.perf_counter() - start)
