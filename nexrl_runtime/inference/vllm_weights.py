"""Weight sync into running vLLM servers (started with VLLM_SERVER_DEV_MODE=1), every replica.

* Disk (`DiskWeightPusher`, works on the CPU build): write `model.safetensors` into a folder the
  servers can read (temp file + rename), then per replica `POST /pause?mode=wait` (in-flight
  requests finish first) -> `POST /collective_rpc {reload_weights, weights_path}` ->
  `POST /update_weight_version` -> `POST /resume`. Every tensor is written, `lm_head.weight` too:
  serve untied checkpoints (a reload does not refresh a tied output head).
* NCCL (`NcclWeightPusher`, GPU clusters): vLLM's weight-transfer engine (`vllm serve
  --weight-transfer-config '{"backend": "nccl"}'`). Once: `/init_weight_transfer_engine` on
  every replica, rank offsets laid end to end after the trainer's rank 0, while the trainer joins
  the group. Per push: `/pause` -> `/start_weight_update` -> `/update_weights` (names, dtypes,
  shapes) while the trainer broadcasts the tensors in that order -> `/finish_weight_update
  {weight_version}` -> `/resume`. The data plane is pluggable (`NcclDataPlane`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import torch
from safetensors.torch import save_file

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.inference.http_util import check

T = TypeVar("T")
WEIGHTS_FILE = "model.safetensors"


class ServerControl:
    """Synchronous calls to the dev-mode routes of every replica (fanned out on threads)."""

    def __init__(self, base_urls: Sequence[str], timeout_s: float = 300.0) -> None:
        if not base_urls:
            raise ValueError("weight sync needs at least one server URL")
        self.urls = [u.rstrip("/") for u in base_urls]
        self.http = httpx.Client(timeout=timeout_s)
        self._pool = ThreadPoolExecutor(max(len(self.urls), 1), thread_name_prefix="weight-sync")

    def call(self, url: str, method: str, path: str, body: Any = None, **params: Any) -> Any:
        resp = check(self.http.request(method, f"{url}{path}", json=body, params=params or None))
        return resp.json() if resp.content else None

    def each(self, fn: Callable[[str], T], urls: Sequence[str] | None = None) -> list[T]:
        """`fn(url)` for every replica (or those in `urls`) concurrently; re-raises the first failure
        after all finish."""
        futures = [self._pool.submit(fn, url.rstrip("/")) for url in (self.urls if urls is None else urls)]
        return [f.result() for f in futures]

    def paused(self, url: str, action: Callable[[], T]) -> T:
        """Run `action` while `url` is paused; in-flight requests complete first, new ones wait."""
        self.call(url, "POST", "/pause", mode="wait")
        try:
            return action()
        finally:
            self.call(url, "POST", "/resume")

    def weight_version(self, url: str) -> str:
        return str(self.call(url, "GET", "/weight_info")["weight_version"])

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.http.close()


def savable(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, detached tensors; any tensor sharing memory with an earlier one (tied
    weights) is cloned, since safetensors refuses shared storage and vLLM wants both names."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in state_dict.items():
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def write_weights(state_dict: Mapping[str, torch.Tensor], folder: str | os.PathLike[str]) -> Path:
    """Write `folder/model.safetensors` atomically (a hidden temp file, then rename); return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / WEIGHTS_FILE
    tmp = folder / f".{WEIGHTS_FILE}.{os.getpid()}.tmp"  # no .safetensors suffix: never globbed
    try:
        save_file(savable(state_dict), str(tmp))
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


class DiskWeightPusher:
    """The disk route. The servers must see `weights_dir` at the same path (one host, or a shared
    volume). `last` holds the figures of the latest push (bytes, write/reload seconds)."""

    def __init__(
        self, base_urls: Sequence[str], weights_dir: str | os.PathLike[str], timeout_s: float = 300.0
    ):
        self.control = ServerControl(base_urls, timeout_s)
        self.weights_dir = Path(weights_dir).resolve()
        self.last: dict[str, float] = {}

    def push(self, state_dict: Mapping[str, torch.Tensor], version: int,
             urls: Sequence[str] | None = None) -> None:
        """Write the weights once, then reload them in every replica (or those in `urls`)."""
        t0 = time.perf_counter()
        path = write_weights(state_dict, self.weights_dir)
        t1 = time.perf_counter()
        self.control.each(lambda url: self.reload(url, version), urls)
        self.last = {
            "bytes": float(path.stat().st_size),
            "write_seconds": t1 - t0,
            "reload_seconds": time.perf_counter() - t1,
        }

    def reload(self, url: str, version: int) -> None:
        """Load the folder's current weights into one replica, paused, and label them `version`
        (also how a restarted replica catches up: the file is the latest push's)."""
        self.control.paused(url, lambda: self._reload(url, version))

    def _reload(self, url: str, version: int) -> None:
        rpc = {"method": "reload_weights", "kwargs": {"weights_path": str(self.weights_dir)}}
        self.control.call(url, "POST", "/collective_rpc", rpc)
        self.control.call(url, "POST", "/update_weight_version", {"new_version": str(version)})

    def close(self) -> None:
        self.control.close()


class NcclDataPlane(Protocol):
    """The trainer's end of the NCCL group: rank 0, the broadcast source."""

    def open(self, master_address: str, master_port: int, world_size: int) -> None: ...

    def broadcast(self, tensors: Iterable[torch.Tensor]) -> None: ...

    def close(self) -> None: ...


class VllmNcclDataPlane:
    """Joins vLLM's stateless NCCL group (needs vLLM and a CUDA device in the trainer process) and
    broadcasts tensor by tensor, the unpacked wire format of vLLM's NCCL engine."""

    def __init__(self) -> None:
        self.group: Any = None

    def open(self, master_address: str, master_port: int, world_size: int) -> None:
        from vllm.distributed.weight_transfer.nccl_common import trainer_init

        info = {"master_address": master_address, "master_port": master_port, "world_size": world_size}
        self.group = trainer_init(info, rank=0)

    def broadcast(self, tensors: Iterable[torch.Tensor]) -> None:
        stream = torch.cuda.current_stream()
        for t in tensors:
            self.group.broadcast(t.to("cuda").contiguous(), src=0, stream=stream)
        stream.synchronize()

    def close(self) -> None:
        if self.group is not None:
            self.group.destroy()
            self.group = None


def update_info(state_dict: Mapping[str, torch.Tensor]) -> dict[str, list[Any]]:
    """The `/update_weights` metadata: names, dtype names and shapes, in broadcast order."""
    return {
        "names": list(state_dict),
        "dtype_names": [str(t.dtype).removeprefix("torch.") for t in state_dict.values()],
        "shapes": [list(t.shape) for t in state_dict.values()],
    }


def alongside(requests: Callable[[], Any], collective: Callable[[], None]) -> None:
    """Run `requests` on a side thread while `collective` runs here; both must finish. If the
    collective fails, the side thread is left behind (its peers wait in NCCL forever), not joined."""
    side = ThreadPoolExecutor(1, thread_name_prefix="nccl-control")
    try:
        pending = side.submit(requests)
        collective()
        pending.result()
    finally:
        side.shutdown(wait=False)


class NcclWeightPusher:
    """The NCCL route; connects on the first push. `master` is the 'host:port' the trainer's
    rendezvous listens on, reachable from every inference pod."""

    def __init__(
        self,
        base_urls: Sequence[str],
        master: str,
        timeout_s: float = 300.0,
        plane: NcclDataPlane | None = None,
    ) -> None:
        host, _, port = master.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"inference.nccl_master: must be 'host:port' (got {master!r})")
        self.master_address, self.master_port = host, int(port)
        self.control = ServerControl(base_urls, timeout_s)
        self.plane: NcclDataPlane = plane or VllmNcclDataPlane()
        self.connected = False

    def connect(self) -> None:
        """Lay the replicas' ranks after rank 0, start their rendezvous, and join it here."""
        sizes = self.control.each(
            lambda url: int(self.control.call(url, "GET", "/get_world_size", include_dp=True)["world_size"])
        )
        offsets = dict(zip(self.control.urls, [1 + sum(sizes[:i]) for i in range(len(sizes))], strict=True))
        world = 1 + sum(sizes)

        def init(url: str) -> None:
            info = {
                "master_address": self.master_address,
                "master_port": self.master_port,
                "rank_offset": offsets[url],
                "world_size": world,
                "packed": False,
            }
            self.control.call(url, "POST", "/init_weight_transfer_engine", {"init_info": info})

        # The replicas block in their init until every rank has joined, this process included.
        alongside(
            lambda: self.control.each(init),
            lambda: self.plane.open(self.master_address, self.master_port, world),
        )
        self.connected = True

    def push(self, state_dict: Mapping[str, torch.Tensor], version: int,
             urls: Sequence[str] | None = None) -> None:
        """Broadcast to the group's replicas; its membership is fixed when it forms (a replica
        that is replaced needs a new group, which this route does not form)."""
        if urls is not None and sorted(u.rstrip("/") for u in urls) != sorted(self.control.urls):
            raise RuntimeError(
                f"inference.weight_sync=nccl: the replicas changed ({sorted(urls)} instead of "
                f"{sorted(self.control.urls)}); the NCCL group cannot take a new member"
            )
        if not self.connected:
            self.connect()
        ctl = self.control
        meta = update_info(state_dict)
        ctl.each(lambda url: ctl.call(url, "POST", "/pause", mode="wait"))
        try:
            ctl.each(lambda url: ctl.call(url, "POST", "/start_weight_update"))
            alongside(  # the replicas receive while this process sends
                lambda: ctl.each(lambda url: ctl.call(url, "POST", "/update_weights", {"update_info": meta})),
                lambda: self.plane.broadcast(t.detach() for t in state_dict.values()),
            )
            body = {"weight_version": str(version)}
            ctl.each(lambda url: ctl.call(url, "POST", "/finish_weight_update", body))
        finally:
            ctl.each(lambda url: ctl.call(url, "POST", "/resume"))

    def close(self) -> None:
        try:
            if self.connected:
                self.control.each(
                    lambda url: self.control.call(url, "POST", "/shutdown_weight_transfer_engine")
                )
                self.connected = False
        finally:
            self.plane.close()
            self.control.close()
