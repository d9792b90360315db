"""The training service on N ranks (`nexrl serve-trainer` under torchrun): rank 0 serves the HTTP API
and drives the other ranks through the process group; every rank holds a TrainerService over the same
sharded policy.

Each model call on rank 0 first broadcasts `(method, args)` to the followers, which run the same
TrainerService method with the same arguments; the collectives inside (FSDP2's all-gathers and
reduce-scatters, the metric sums, the weight gathers) then pair up. Refusals (bad tokens, no pending
gradient, a bad weights file) are decided from the same arguments and state on every rank, so they
happen on all ranks alike before any collective. Rank 0 also sends a no-op every `heartbeat_s` so an
idle service never trips the process group's timeout.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from nexrl_runtime.trainer.fsdp import RankGroup
from nexrl_runtime.trainer_service.service import NotFound, ServiceError, TrainerService

STOP = "__stop__"
NOOP = "__noop__"
# TrainerService methods that touch the model: run on every rank.
COLLECTIVE = (
    "forward_backward",
    "optim_step",
    "compute_logprobs",
    "weights_bytes",
    "load_weights_bytes",
    "save_weights",
    "save_checkpoint",
    "load_checkpoint",
)


class RankLeader:
    """Rank 0's face of the service, what `create_app` serves: the same methods as TrainerService."""

    def __init__(self, service: TrainerService, ranks: RankGroup, heartbeat_s: float = 60.0) -> None:
        self.service = service
        self.ranks = ranks
        self.lock = threading.Lock()  # one broadcast + call at a time: the followers run them in order
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat_s,), daemon=True)
        self._beat.start()

    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every):
            with self.lock:
                if not self._stop.is_set():
                    self.ranks.broadcast_object((NOOP, ()))

    def _all(self, name: str, *args: Any) -> Any:
        with self.lock:
            if self._stop.is_set():
                raise ServiceError("the service is stopping")
            self.ranks.broadcast_object((name, args))
            return getattr(self.service, name)(*args)

    def health(self) -> Any:
        return self.service.health()

    def forward_backward(self, req: Any) -> Any:
        return self._all("forward_backward", req)

    def optim_step(self) -> Any:
        return self._all("optim_step")

    def compute_logprobs(self, req: Any) -> Any:
        return self._all("compute_logprobs", req)

    def weights_bytes(self) -> Any:
        return self._all("weights_bytes")

    def load_weights_bytes(self, data: bytes) -> Any:
        return self._all("load_weights_bytes", data)

    def save_weights(self, name: str) -> Any:
        return self._all("save_weights", name)

    def save_checkpoint(self, name: str) -> Any:
        return self._all("save_checkpoint", name)

    def load_checkpoint(self, name: str) -> Any:
        # Only rank 0 reads the file (and broadcasts it), so only rank 0 decides whether it exists.
        path = self.service.checkpoint_dir / f"{name}.pt"
        if not path.is_file():
            raise NotFound(f"no checkpoint {name!r} (looked for {path})")
        return self._all("load_checkpoint", name)

    def stop(self) -> None:
        """Release the followers (they return from `follow`)."""
        with self.lock:
            if not self._stop.is_set():
                self._stop.set()
                self.ranks.broadcast_object((STOP, ()))


def follow(service: TrainerService, ranks: RankGroup) -> None:
    """A follower rank's loop: run what rank 0 broadcasts until it says stop."""
    while True:
        name, args = ranks.broadcast_object()
        if name == STOP:
            return
        if name == NOOP:
            continue
        if name not in COLLECTIVE:
            raise RuntimeError(f"rank {ranks.rank}: rank 0 sent an unknown call {name!r}")
        try:
            getattr(service, name)(*args)
        except ServiceError:
            pass  # rank 0 refused the same request for the same reason and answers it
        except Exception as err:
            print(
                f"nexrl serve-trainer rank {ranks.rank}: {name} failed: {err!r}", file=sys.stderr, flush=True
            )
