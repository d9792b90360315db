"""The driver's Ray connection: joined or started once per process, shut down cleanly.

Address order: `ray.address`, then `$RAY_ADDRESS` (set in a RayJob's head), then
`cluster.ray_address` (the operator writes "auto"), else a local Ray is started with the
`ray.num_cpus/num_gpus/resources` of the config. Only a Ray started here is shut down here
(at `shutdown()` or process exit), which stops its raylet and GCS: nothing is leaked.
"""

from __future__ import annotations

import atexit
import os
import threading

import ray

from nexrl_runtime.config.schema import NexRLConfig

_lock = threading.Lock()


def ray_address(config: NexRLConfig) -> str | None:
    """Where to connect, or None to start a local Ray."""
    return config.ray.address or os.environ.get("RAY_ADDRESS") or config.cluster.ray_address or None


def connect(config: NexRLConfig) -> bool:
    """Make sure this process is connected to Ray; True when this call started a local Ray."""
    with _lock:
        if ray.is_initialized():
            return False
        address = ray_address(config)
        if address is not None:
            ray.init(address=address, log_to_driver=True)
            return False
        r = config.ray
        ray.init(
            num_cpus=r.num_cpus,
            num_gpus=r.num_gpus,
            resources=dict(r.resources) or None,
            include_dashboard=False,
            log_to_driver=True,
        )
        atexit.register(shutdown)
        return True


def shutdown() -> None:
    """Disconnect; stop the local Ray if this process started it (idempotent)."""
    with _lock:
        if ray.is_initialized():
            ray.shutdown()
