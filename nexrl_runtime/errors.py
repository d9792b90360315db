"""Error policies (`errors:` in the config): a failing sample costs that sample, not the run.

`ErrorBook` counts failures by kind (`evaluator`, `rollout`, `inference`, `nonfinite`), logs the
traceback of the first failure of each kind once, and raises `RunStopped` (the item and the error
in words) under `policy: stop`, or when `max_consecutive` / `max_total` is exceeded. Thread safe:
the rollout workers report from their threads."""

from __future__ import annotations

import logging
import threading
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nexrl_runtime.config.schema import ErrorsConfig

log = logging.getLogger("nexrl.errors")


class RunStopped(RuntimeError):
    """The run stops on a sample error (policy stop, or a cap exceeded); the CLI prints it as
    `nexrl: <message>` and exits 1."""


class ErrorBook:
    def __init__(self, config: ErrorsConfig) -> None:
        self.config = config
        self.counts: dict[str, int] = {}
        self.consecutive = 0
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def record(self, kind: str, where: str, err: BaseException, samples: int = 1) -> None:
        """`samples` samples of item `where` (an id) were lost to `err`; raises RunStopped when the
        policy says the run stops."""
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + samples
            self.consecutive += samples
            if kind not in self._logged:
                self._logged.add(kind)
                tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
                log.warning("first %s error (item %s); later ones are only counted:\n%s", kind, where, tb)
            what = f"{kind} error on item {where}: {type(err).__name__}: {err}"
            cfg = self.config
            if cfg.policy == "stop":
                raise RunStopped(f"{what} (errors.policy=stop)") from err
            if cfg.max_consecutive is not None and self.consecutive > cfg.max_consecutive:
                raise RunStopped(
                    f"{self.consecutive} consecutive failed samples exceed errors.max_consecutive="
                    f"{cfg.max_consecutive}; the last: {what}"
                ) from err
            if cfg.max_total is not None and self.total > cfg.max_total:
                raise RunStopped(
                    f"{self.total} failed samples exceed errors.max_total={cfg.max_total}; the last: {what}"
                ) from err

    def count(self, kind: str, n: int = 1) -> None:
        """Count without the policy (the caller decides), e.g. skipped non-finite updates."""
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + n

    def ok(self, samples: int = 1) -> None:
        """Samples that went through: the consecutive run of failures ends."""
        if samples:
            with self._lock:
                self.consecutive = 0

    def metrics(self) -> dict[str, float]:
        """Cumulative counts, `errors_<kind>` (all four kinds, so the series exist from step 1)."""
        with self._lock:
            kinds = {"evaluator", "rollout", "inference", "nonfinite", *self.counts}
            return {f"errors_{k}": float(self.counts.get(k, 0)) for k in sorted(kinds)}


class InferenceFailed(RuntimeError):
    """The engine's generate call failed (for HTTP engines: past its retries): counted as
    `errors_inference`, not `errors_rollout`."""


def item_name(item: object) -> str:
    """How errors name a data item: its sample id and its index in the data file."""
    sample_id = getattr(item, "sample_id", None)
    index = getattr(item, "index", None)
    return f"{sample_id} (data index {index})" if sample_id is not None else repr(item)
